"""Unlabeled image trees: shards without classes that pretrain, and that the labelled stages refuse in one line."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.data.shards import inspect, read_index, verify, write_shards
from simclr_hpc.data.sources import UNLABELED, DataError, open_unlabeled
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """48 small photos-to-be at three depths (no class meaning in the folders), plus files that are not images."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(48):
        folder = root / ["", "2024/trip", "2025/a/b/c"][i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    (root / "notes.txt").write_text("not an image")
    (root / ".thumbs").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / ".thumbs" / "hidden.png")
    return root


@pytest.fixture(scope="module")
def unlabeled_shards(image_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "photos"
    write_shards(open_unlabeled(str(image_tree)), out, shard_size=20, seed=0)
    return out


def test_unlabeled_source_takes_every_image_of_the_tree_and_no_class(image_tree, tmp_path):
    source = open_unlabeled(str(image_tree))
    assert source.classes == [] and list(source.splits) == ["train"]
    train = source.splits["train"]
    assert len(train) == 48 and set(train.labels.tolist()) == {UNLABELED}
    assert not any(".thumbs" in str(p) for p in train.files)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        open_unlabeled(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="not found"):
        open_unlabeled(str(tmp_path / "missing"))


def test_unlabeled_shards_say_so_in_the_index_and_verify_clean(unlabeled_shards):
    index = read_index(unlabeled_shards)
    assert index.labelled is False and index.classes == [] and list(index.splits) == ["train"]
    assert len(index.split("train").keys) == 48
    assert json.loads((unlabeled_shards / "index.json").read_text())["labelled"] is False
    with tarfile.open(unlabeled_shards / "train-000000.tar") as tar:
        labels = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".cls")}
    assert set(labels.values()) == {b"-1"}
    assert verify(unlabeled_shards) == []
    assert inspect(unlabeled_shards)["counts"] == {"train": {"(unlabeled)": 48}}


def _args(stage, overrides):
    return ["run", stage] + [a for item in overrides for a in ("--set", item)]


def test_unlabeled_shards_pretrain_and_labelled_stages_refuse_them_in_one_line(unlabeled_shards, tmp_path):
    base = tiny_overrides(unlabeled_shards, tmp_path, steps=2)
    result = CliRunner().invoke(app, _args("pretrain", base + ["run.name=p"]))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t/pretrain/p/result.json").read_text())["steps"] == 2
    for stage, extra in (
        ("finetune", ["finetune.encoder=random"]),
        ("transfer", ["transfer.encoder=random"]),
        ("distill", []),
    ):
        refused = CliRunner().invoke(app, _args(stage, base + ["run.name=x", *extra]))
        assert refused.exit_code == 2, refused.output
        assert refused.output.strip().splitlines() == [
            f"error: data.shards: {unlabeled_shards} holds unlabeled images ({read_index(unlabeled_shards).source}) "
            f"and {stage} needs labels; point data.shards at labelled shards (cifar10:, imagefolder:, npz:, ...) or run "
            "pretrain on these"
        ]
        assert not (tmp_path / "t" / stage).exists()


def test_data_shards_command_builds_unlabeled_shards(image_tree, tmp_path):
    out = tmp_path / "photos"
    result = CliRunner().invoke(app, ["data", "shards", f"unlabeled:{image_tree}", str(out)])
    assert result.exit_code == 0, result.output
    index = read_index(out)
    assert index.labelled is False and sum(len(s.keys) for s in index.splits.values()) == 48
    assert verify(out) == []
