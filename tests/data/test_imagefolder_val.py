"""An ImageFolder's val/ (or validation/) is the validation split, and the evaluation split when there is no test/."""

import json

import pytest
from PIL import Image

from simclr_hpc.data.shards import write_shards
from simclr_hpc.data.sources import DataError, open_source


def _tree(root, splits=("train", "val"), per_class=(4, 2), classes=("cat", "dog")):
    for split, n in zip(splits, per_class):
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (24, 20), (40 * c, 10 * i, 0)).save(root / split / cls / f"{i}.jpg", quality=90)
    return root


def test_an_imagefolder_with_train_and_val_gets_a_val_split_that_is_its_evaluation_split(tmp_path):
    root = _tree(tmp_path / "imnet")
    index = write_shards(f"imagefolder:{root}", tmp_path / "shards", shard_size=3, seed=0)
    assert set(index.splits) == {"train", "val"}  # no test carved out of train: the official val is kept whole
    assert len(index.split("train").keys) == 8 and len(index.split("val").keys) == 4
    assert sorted(index.split("val").labels.tolist()) == [0, 0, 1, 1]
    assert index.eval_split == "val" and index.is_evaluation("val") and not index.is_evaluation("train")
    assert index.split("test") is index.split("val")  # data.eval_split's default reads the official val
    assert json.loads((tmp_path / "shards" / "index.json").read_text())["eval_split"] == "val"
    assert sorted(index.split("val").names) == ["0.jpg", "0.jpg", "1.jpg", "1.jpg"]


def test_validation_dir_and_a_test_dir(tmp_path):
    root = _tree(tmp_path / "x", splits=("train", "validation", "test"), per_class=(3, 1, 2))
    src = open_source(f"imagefolder:{root}")
    assert {name: len(s) for name, s in src.splits.items()} == {"train": 6, "val": 2, "test": 4}
    index = write_shards(src, tmp_path / "shards", shard_size=4, seed=0)
    assert index.eval_split == "test" and set(index.splits) == {"train", "val", "test"}


def test_val_mistakes_are_one_line_each(tmp_path):
    root = _tree(tmp_path / "a")
    with pytest.raises(DataError, match="has its own validation split"):
        write_shards(f"imagefolder:{root}", tmp_path / "s", val_fraction=0.1)
    assert not (tmp_path / "s").exists()
    (root / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="class directory 'bird' is not in the training tree"):
        open_source(f"imagefolder:{root}")
    flat = _tree(tmp_path / "b", splits=("train",), per_class=(2,))
    (flat / "val").mkdir()
    Image.new("RGB", (8, 8)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError, match="images lie directly in it"):
        open_source(f"imagefolder:{flat}")
    both = _tree(tmp_path / "c", splits=("train", "val", "validation"), per_class=(2, 1, 1))
    with pytest.raises(DataError, match="both val/ and validation/"):
        open_source(f"imagefolder:{both}")
