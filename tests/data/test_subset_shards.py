"""A labelled subset materialised as its own shard set: built once, safe when two jobs race, and all a 1 % fine-tune
reads of the training split."""

import pytest

from simclr_hpc.data import subset_shards
from simclr_hpc.data.shards import read_index, verify, write_shards


@pytest.fixture(scope="module")
def shapes1000(tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "shapes"
    write_shards("shapes:4:250:16", out, shard_size=50, seed=0)  # 1,000 training images in 20 shards
    return out


def test_a_subset_becomes_its_own_shards_once(shapes1000, tmp_path):
    train = read_index(shapes1000).split("train")
    keys = train.keys[::97]
    made = subset_shards.materialise(shapes1000, "train", keys, tmp_path)
    assert made.parent == shapes1000 / subset_shards.SUBSETS and verify(made) == []
    sub = read_index(made).split("train")
    assert sub.keys == keys and sub.labels.tolist() == [int(train.labels[train.keys.index(k)]) for k in keys]
    stamp = (made / "index.json").stat().st_mtime_ns
    assert subset_shards.materialise(shapes1000, "train", list(reversed(keys)), tmp_path) == made
    assert (made / "index.json").stat().st_mtime_ns == stamp  # found, not built again


def test_the_loser_of_a_race_uses_the_winners_set_and_removes_its_own(shapes1000, tmp_path, monkeypatch):
    keys = read_index(shapes1000).split("train").keys[5:25]
    winner = subset_shards.materialise(shapes1000, "train", keys, tmp_path)
    real, calls = subset_shards.has_index, []

    def not_yet_at_first(directory):  # the loser looked before the winner renamed its directory into place
        calls.append(directory)
        return real(directory) if len(calls) > 1 else False

    monkeypatch.setattr(subset_shards, "has_index", not_yet_at_first)
    assert subset_shards.materialise(shapes1000, "train", keys, tmp_path) == winner
    assert len(calls) == 2 and verify(winner) == []  # it built its own copy, lost the rename, and checked again
    assert not [p for p in winner.parent.iterdir() if "building" in p.name]


def test_a_one_percent_fine_tune_reads_only_the_subsets_shards(shapes1000, tmp_path, monkeypatch):
    from simclr_hpc.config import load_config
    from simclr_hpc.data import shard_reader
    from simclr_hpc.data.memo import ByteCappedMemo
    from simclr_hpc.train.runner import run_stage
    from tests.conftest import tiny_overrides

    opened = []
    real = shard_reader.iter_tar_samples
    monkeypatch.setattr(shard_reader, "iter_tar_samples", lambda path: (opened.append(path), real(path))[1])
    for protocol in ("full", "linear"):
        opened.clear()  # and no shard kept decoded from the run before: every read goes to disk
        monkeypatch.setattr(shard_reader, "SHARD_MEMO", ByteCappedMemo(shard_reader.SHARD_MEMO.cap))
        cfg = load_config(
            overrides=[
                *tiny_overrides(shapes1000, tmp_path, steps=2),
                f"run.name={protocol}",
                "finetune.encoder=random",
                "finetune.label_fraction=0.01",
                f"finetune.protocol={protocol}",
            ],
            stage="finetune",
        )
        result = run_stage("finetune", cfg)
        assert result["train_images"] <= 12
        train_reads = {p for p in opened if "train-" in p.name}
        assert train_reads and all(subset_shards.SUBSETS in p.parts for p in train_reads), train_reads
