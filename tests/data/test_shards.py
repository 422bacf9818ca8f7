import json

import numpy as np
import pytest
from conftest import rewrite_shard, truncate_file

from simclr_hpc.data.shards import inspect, read_index, verify, write_shards
from simclr_hpc.data.sources import DataError


def test_index_counts_keys_and_labels(shapes_shards):
    index = read_index(shapes_shards)
    assert index.classes == ["disc", "square", "triangle", "star"] and index.image_size == (32, 32)
    assert index.channels == 3 and index.image_format == "png"
    sizes = {name: len(s.keys) for name, s in index.splits.items()}
    assert sizes == {"train": 108, "val": 12, "test": 80}
    val = index.split("val")
    assert np.bincount(val.labels).tolist() == [3, 3, 3, 3]  # stratified
    train = index.split("train")
    assert [s.count for s in train.shards] == [25, 25, 25, 25, 8]
    assert [s.name for s in train.shards][:2] == ["train-000000.tar", "train-000001.tar"]
    all_keys = [k for s in index.splits.values() for k in s.keys]
    assert len(set(all_keys)) == len(all_keys)
    doc = json.loads((shapes_shards / "index.json").read_text())
    assert len(doc["content_hash"]) == 64 and doc["splits"]["test"]["labels"][:2] == [0, 0]


def test_same_source_and_seed_give_identical_shards(tmp_path):
    a = write_shards("shapes:3:6:16", tmp_path / "a", val_fraction=0.2, shard_size=5, seed=1)
    b = write_shards("shapes:3:6:16", tmp_path / "b", val_fraction=0.2, shard_size=5, seed=1)
    c = write_shards("shapes:3:6:16", tmp_path / "c", val_fraction=0.2, shard_size=5, seed=2)
    assert a.content_hash == b.content_hash != c.content_hash
    for sa, sb in zip(a.split("train").shards, b.split("train").shards):
        assert (tmp_path / "a" / sa.name).read_bytes() == (tmp_path / "b" / sb.name).read_bytes()


def test_webdataset_reads_our_shards(shapes_shards):
    import webdataset as wds

    index = read_index(shapes_shards)
    urls = [str(shapes_shards / s.name) for s in index.split("test").shards]
    samples = list(
        wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("rgb8").to_tuple("__key__", "png", "cls")
    )
    assert [k for k, _, _ in samples] == index.split("test").keys
    assert [int(c) for _, _, c in samples] == index.split("test").labels.tolist()
    assert samples[0][1].shape == (32, 32, 3)


def test_source_without_test_split_gets_a_stratified_one(tmp_path):
    index = write_shards("mnist5k", tmp_path / "m", shard_size=2500)
    assert len(index.split("train").keys) == 4000 and len(index.split("test").keys) == 1000
    assert np.bincount(index.split("test").labels).tolist() == [100] * 10
    assert index.channels == 1 and index.image_size == (28, 28)


def test_refuses_to_overwrite_and_bad_options(tmp_path, shapes_shards):
    with pytest.raises(DataError, match="already holds shards"):
        write_shards("shapes:2:2", shapes_shards)
    with pytest.raises(DataError, match="--val-fraction"):
        write_shards("shapes:2:2", tmp_path / "x", val_fraction=1.5)


def test_missing_index_names_dir_and_command(tmp_path):
    with pytest.raises(DataError, match=r"index.json: not found.*simclr-hpc data shards SOURCE"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid shard index"):
        read_index(tmp_path)


def test_verify_is_clean_on_fresh_shards(shapes_shards):
    assert verify(shapes_shards) == []


@pytest.fixture
def damaged(tmp_path):
    out = tmp_path / "d"
    write_shards("shapes:3:10:16", out, shard_size=10, seed=0)
    return out, read_index(out)


def test_verify_names_truncated_shard(damaged):
    out, index = damaged
    shard = index.split("train").shards[1]
    truncate_file(out / shard.name, 0.5)
    problems = verify(out)
    assert any(p.startswith(shard.name) and "truncated" in p for p in problems), problems
    assert any("sha256 differs" in p for p in problems)


def test_verify_names_undecodable_image_and_missing_label(damaged):
    out, index = damaged
    train = index.split("train")
    bad_img, no_label = train.keys[2], train.keys[13]
    rewrite_shard(out / train.shards[0].name, lambda n, d: b"garbage" + d[20:] if n == f"{bad_img}.png" else d)
    rewrite_shard(out / train.shards[1].name, lambda n, d: None if n == f"{no_label}.cls" else d)
    problems = verify(out)
    assert any(p.startswith(f"{train.shards[0].name}: key {bad_img}: undecodable image") for p in problems), problems
    assert f"{train.shards[1].name}: key {no_label}: missing label (.cls)" in problems


def test_verify_finds_count_and_label_mismatch(damaged):
    out, index = damaged
    test = index.split("test")
    dropped, relabelled = test.keys[0], test.keys[1]
    new_label = str((int(test.labels[1]) + 1) % 3).encode()
    rewrite_shard(
        out / test.shards[0].name,
        lambda n, d: None if n.startswith(dropped) else new_label if n == f"{relabelled}.cls" else d,
    )
    problems = verify(out)
    assert f"{test.shards[0].name}: 9 samples but index.json says 10" in problems
    assert any(f"key {relabelled}: label" in p and "index.json says" in p for p in problems)


def test_inspect_counts_and_contact_sheet(shapes_shards):
    from PIL import Image

    info = inspect(shapes_shards)
    assert info["counts"]["train"] == {"disc": 27, "square": 27, "triangle": 27, "star": 27}
    assert info["counts"]["test"]["star"] == 20
    with Image.open(info["contact_sheet"]) as sheet:
        assert sheet.height == 4 * 66 and sheet.width > 8 * 64
