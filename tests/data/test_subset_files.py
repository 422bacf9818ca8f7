"""Subset files (google-research/simclr's 1 %/10 % lists, VISSL's): exactly the listed images, by key or file name."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from simclr_hpc.data.shards import read_index, write_shards
from simclr_hpc.data.sources import DataError
from simclr_hpc.data.subsets import positions_from_file


@pytest.fixture(scope="module")
def folder_shards(tmp_path_factory):
    """An ImageFolder of 2 classes x 12 images named like ImageNet's (synset_number.JPEG), with its own test split."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for synset in ("n01440764", "n01443537"):
            (root / split / synset).mkdir(parents=True)
            for i in range(12 if split == "train" else 4):
                pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / synset / f"{synset}_{split}{i}.png")
    out = tmp_path_factory.mktemp("shards") / "folder"
    write_shards(f"imagefolder:{root}", out, shard_size=10, seed=0)
    return out


def test_index_records_the_file_name_of_every_sample(folder_shards):
    train = read_index(folder_shards).split("train")
    assert len(train.names) == len(train.keys) == 24
    assert sorted(train.names) == sorted(f"{s}_train{i}.png" for s in ("n01440764", "n01443537") for i in range(12))


def test_subset_file_selects_exactly_the_listed_images_by_name_or_key(folder_shards, tmp_path):
    train = read_index(folder_shards).split("train")
    listed = ["n01440764_train3.png", "n01443537_train0.png", "n01443537_train11.png"]
    text = "# a 3-image subset\n" + "\n".join(listed) + f"\n\n{train.keys[5]}  # by key\n"
    path = tmp_path / "subset.txt"
    path.write_text(text)
    positions, digest = positions_from_file(path, train.keys, train.names)
    want = sorted({train.names.index(n) for n in listed} | {5})
    assert positions.tolist() == want
    assert digest == hashlib.sha256(text.encode()).hexdigest()


def test_unknown_or_ambiguous_lines_are_errors_naming_the_line(folder_shards, tmp_path):
    train = read_index(folder_shards).split("train")
    path = tmp_path / "bad.txt"
    path.write_text("n01440764_train3.png\nn09999999_1.JPEG\n")
    with pytest.raises(DataError) as err:
        positions_from_file(path, train.keys, train.names)
    assert err.value.lines == [
        f"finetune.label_subset_file: {path} line 2: 'n09999999_1.JPEG' names no image of the "
        "split (neither a shard key nor a file name)"
    ]
    with pytest.raises(DataError, match="is the file name of 2 images"):
        positions_from_file(path, ["a", "b", "c"], ["x.png", "n01440764_train3.png", "n01440764_train3.png"])
    with pytest.raises(DataError, match="file not found"):
        positions_from_file(tmp_path / "none.txt", train.keys, train.names)


def test_finetune_with_a_subset_file_trains_on_exactly_its_images_and_records_the_hash(folder_shards, tmp_path):
    import json

    from typer.testing import CliRunner

    from simclr_hpc.cli.main import app
    from tests.conftest import tiny_overrides

    train = read_index(folder_shards).split("train")
    listed = sorted(train.names)[::3]  # 8 of the 24 training images, by file name
    path = tmp_path / "eight.txt"
    path.write_text("\n".join(listed) + "\n")
    args = ["run", "finetune"] + [
        a
        for o in tiny_overrides(folder_shards, tmp_path, steps=2)
        + ["run.name=sub", "finetune.encoder=random", f"finetune.label_subset_file={path}"]
        for a in ("--set", o)
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "t" / "finetune" / "sub"
    record = json.loads((run_dir / "subset.json").read_text())
    assert sorted(record["train_keys"]) == sorted(train.keys[train.names.index(n)] for n in listed)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["subset_sha256"] == digest
    done = json.loads((run_dir / "result.json").read_text())
    assert done["label_subset_sha256"] == digest and done["train_images"] == 8


def test_a_bad_subset_file_is_refused_before_anything_is_written(folder_shards, tmp_path):
    from typer.testing import CliRunner

    from simclr_hpc.cli.main import app
    from tests.conftest import tiny_overrides

    path = tmp_path / "bad.txt"
    path.write_text("not_an_image.JPEG\n")
    args = ["run", "finetune"] + [
        a
        for o in tiny_overrides(folder_shards, tmp_path, steps=2)
        + ["run.name=bad", "finetune.encoder=random", f"finetune.label_subset_file={path}"]
        for a in ("--set", o)
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: finetune.label_subset_file: {path} line 1: 'not_an_image.JPEG' names no image of the split "
        "(neither a shard key nor a file name)"
    ]
    assert not (tmp_path / "t").exists()
