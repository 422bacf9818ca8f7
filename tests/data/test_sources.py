import pickle

import numpy as np
import pytest
from PIL import Image

from simclr_hpc.config import UserError
from simclr_hpc.data.shard_writer import file_payload
from simclr_hpc.data.sources import DataError, open_source


def _write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _fake_cifar10(root, per_batch=4):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        _write_pickle(base / name, {"batch_label": name, "labels": labels, "data": data, "filenames": []})
        batches[name] = (data, labels)
    _write_pickle(base / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    return batches


def test_cifar10_reads_torchvision_pickles_in_channel_planes(tmp_path):
    batches = _fake_cifar10(tmp_path)
    src = open_source(f"cifar10:{tmp_path}")
    train = src.splits["train"]
    assert len(train) == 20 and len(src.splits["test"]) == 4 and src.classes[3] == "c3"
    data, labels = batches["data_batch_2"]
    img = train.image(4)  # first image of the second batch
    assert img.shape == (32, 32, 3)
    # row-major 32x32 planes R, G, B: pixel (row 1, col 2) of channel c is data[c*1024 + 1*32 + 2]
    assert [int(img[1, 2, c]) for c in range(3)] == [int(data[0, c * 1024 + 34]) for c in range(3)]
    assert int(train.labels[4]) == labels[0]


def test_cifar100_uses_fine_labels(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    data = np.zeros((3, 3072), np.uint8)
    for name, fine in (("train", [5, 99, 0]), ("test", [1, 2, 3])):
        _write_pickle(base / name, {"data": data, "fine_labels": fine, "coarse_labels": [0, 0, 0]})
    _write_pickle(base / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []})
    src = open_source(f"cifar100:{tmp_path}")
    assert len(src.classes) == 100 and src.splits["train"].labels.tolist() == [5, 99, 0]


def test_cifar_pickle_with_code_is_refused(tmp_path):
    _fake_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    _write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", {"data": Evil(), "labels": []})
    with pytest.raises(DataError, match=r"global posix.system is not allowed"):
        open_source(f"cifar10:{tmp_path}")


def test_stl10_binary_is_column_major(tmp_path):
    base = tmp_path / "stl10_binary"
    base.mkdir()
    for split, n in (("train", 3), ("test", 2)):
        raw = np.zeros((n, 3, 96, 96), np.uint8)
        raw[0, 1, 5, 2] = 200  # stored as [channel, column, row]
        raw.tofile(base / f"{split}_X.bin")
        np.array([1, 10, 3][:n], np.uint8).tofile(base / f"{split}_y.bin")
    (base / "class_names.txt").write_text("\n".join(f"n{i}" for i in range(10)))
    src = open_source(f"stl10:{tmp_path}")
    img = src.splits["train"].image(0)
    assert img.shape == (96, 96, 3) and img[2, 5, 1] == 200 and img.sum() == 200
    assert src.splits["train"].labels.tolist() == [0, 9, 2] and src.classes[0] == "n0"


def _png(path, value, size=(20, 16), mode="RGB"):
    Image.new(mode, size, value).save(path)


def test_imagefolder_flat_and_with_train_test(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "flat" / cls).mkdir(parents=True)
        for i in range(3):
            _png(tmp_path / "flat" / cls / f"{i}.png", (i, 0, 0))
    (tmp_path / "flat" / "notes.txt").write_text("not a class")
    src = open_source(f"imagefolder:{tmp_path / 'flat'}")
    assert src.classes == ["cat", "dog"] and list(src.splits) == ["train"]
    assert src.splits["train"].labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert src.splits["train"].image(1).shape == (16, 20, 3)

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "tt" / split / cls).mkdir(parents=True)
            Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "tt" / split / cls / "x.jpg")
    src = open_source(f"imagefolder:{tmp_path / 'tt'}")
    assert set(src.splits) == {"train", "test"}
    data, fmt, hw = file_payload(src.splits["test"].files[1], "jpg", 3, "header")
    assert fmt == "jpg" and data == src.splits["test"].files[1].read_bytes() and hw == (40, 40)  # stored as it is


def test_npz_grayscale_with_test_split(tmp_path):
    x = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 1]), x_test=x[:2], y_test=np.array([2, 0]))
    src = open_source(f"npz:{tmp_path / 'd.npz'}")
    assert src.classes == ["0", "1", "2"]
    assert src.splits["train"].image(3).shape == (5, 6, 1) and (src.splits["train"].image(3)[..., 0] == x[3]).all()
    assert src.splits["test"].labels.tolist() == [2, 0]


def test_npz_without_labels_is_an_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="no array 'y'"):
        open_source(f"npz:{tmp_path / 'd.npz'}")


def test_mnist5k_is_the_real_5000_digit_subset():
    src = open_source("mnist5k")
    train = src.splits["train"]
    assert len(train) == 5000 and np.bincount(train.labels).tolist() == [500] * 10
    img = train.image(0)
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8 and img.max() > 200


def test_shapes_spec_fields():
    src = open_source("shapes:3:5:24:7")
    assert src.spec == "shapes:3:5:24:7" and len(src.classes) == 3
    assert len(src.splits["train"]) == 15 and len(src.splits["test"]) == 60
    assert src.splits["train"].image(0).shape == (24, 24, 3)
    assert open_source("shapes", seed=2).spec == "shapes:10:500:32:2"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("cifar10:/nonexistent/root", "/nonexistent/root/cifar-10-batches-py/data_batch_1: not found"),
        ("cifar100:/nonexistent/root", "cifar-100-python/train: not found"),
        ("stl10:/nonexistent/root", "stl10_binary/train_X.bin: not found"),
        ("imagefolder:/nonexistent/dir", "/nonexistent/dir: not found"),
        ("npz:/nonexistent/f.npz", "/nonexistent/f.npz: not found"),
        ("imagenet:/x", "unknown kind 'imagenet'"),
        ("cifar10", "needs a path"),
        ("shapes:1", "2 <= K"),
        ("shapes:ten", "must be integers"),
    ],
)
def test_missing_or_bad_source_is_one_user_error_line(spec, fragment):
    with pytest.raises(UserError) as err:
        open_source(spec)
    assert len(err.value.lines) == 1 and fragment in err.value.lines[0]
    assert isinstance(err.value, DataError)
