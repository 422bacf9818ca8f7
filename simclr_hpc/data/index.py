"""A shard directory's ``index.json``: its name, its schema and its one reader (torch-free: a login node reads it too).

``data/shards.py`` writes the file (see its docstring for what it records); everything that reads one comes here:
``read_index`` for the whole, validated document, ``has_index`` for "is this directory built" and ``index_num_classes``
for a study's class-count check before any shard exists.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simclr_hpc.data.sources import UNLABELED, DataError
from simclr_hpc.readers import FileError, read_json

INDEX = "index.json"
FORMAT = "simclr-hpc-shards/1"


@dataclass
class ShardInfo:
    """One tar file: its name (relative to the shard directory), sample count and sha256."""

    name: str
    count: int
    sha256: str
    bytes: int | None = None
    """File size (None in directories written before it was recorded)."""


@dataclass
class SplitIndex:
    """One split: sample keys and labels in shard order, and its shards (consecutive runs of those keys)."""

    keys: list[str]
    labels: np.ndarray
    shards: list[ShardInfo]
    names: list[str] | None = None
    """Original file name of each sample (sources read from files, e.g. ImageFolder); None for array sources."""

    def shard_ranges(self) -> list[tuple[ShardInfo, int, int]]:
        """``(shard, start, stop)``: the positions in ``keys`` that each shard holds."""
        out, start = [], 0
        for shard in self.shards:
            out.append((shard, start, start + shard.count))
            start += shard.count
        return out


@dataclass
class DatasetIndex:
    """What ``index.json`` says about a shard directory (see the module docstring)."""

    root: Path
    source: str
    classes: list[str]
    image_size: tuple[int, int] | None
    channels: int
    image_format: str
    seed: int
    val_fraction: float
    splits: dict[str, SplitIndex] = field(default_factory=dict)
    content_hash: str = ""
    labelled: bool = True
    """False for shards of an ``unlabeled:`` source: no classes, every label -1; pretraining only."""
    eval_split: str = "test"
    """The split results are reported on: ``test``, or ``val`` when the source had its own validation set and no test
    set (ImageNet's official val/)."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def is_evaluation(self, name: str) -> bool:
        """Whether split ``name`` is the one results are reported on (never to be tuned on)."""
        return name == self.eval_split or (name == "test" and "test" not in self.splits)

    def split(self, name: str) -> SplitIndex:
        """The split called ``name``; a DataError listing the splits that exist otherwise.

        ``test`` names the evaluation split (``eval_split``) in shards that have no test split: ``data.eval_split``'s
        default reads ImageNet's official val/ there. Whoever tunes on ``val`` must check :meth:`is_evaluation`."""
        if name == "test" and name not in self.splits and self.eval_split in self.splits:
            name = self.eval_split
        if name not in self.splits:
            raise DataError(
                f"{self.root}: no split {name!r} (this directory has: {', '.join(self.splits)}); "
                f"set data.train_split / data.eval_split to one of those"
            )
        return self.splits[name]


def _labels(values, split: str, doc: dict) -> np.ndarray:
    """A split's labels: whole numbers in 0..K-1 (K = the index's classes), or all UNLABELED in unlabeled shards."""
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"split {split}: labels must be a list of whole numbers")
    k = len(doc["classes"])
    allowed = (UNLABELED, UNLABELED) if not doc.get("labelled", True) else (0, k - 1)
    bad = [v for v in values if not allowed[0] <= v <= allowed[1]]
    if bad:
        raise ValueError(f"split {split}: label {bad[0]} outside {allowed[0]}..{allowed[1]} ({k} classes)")
    return np.asarray(values, dtype=np.int64)


def _shard(x: dict) -> ShardInfo:
    """One shard record. Its name must be a plain ``*.tar`` file name: a shard is only ever read inside its directory
    (never ``../other/x.tar`` or ``/etc/passwd``)."""
    name = x["name"]
    if (
        not isinstance(name, str)
        or Path(name).name != name
        or name.startswith(".")
        or not name.endswith(".tar")
        or "\\" in name
        or not name.isprintable()
    ):
        raise ValueError(f"shard name {str(name)[:80]!r} is not a *.tar file name inside the directory")
    info = ShardInfo(
        name, _whole(x["count"], "count"), str(x["sha256"]), _whole(x["bytes"], "bytes") if "bytes" in x else None
    )
    return info


def _whole(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"shard {what} {str(value)[:40]!r} is not a whole number")
    return value


def _sizes(doc: dict, splits: dict) -> tuple[int, int] | None:
    """The index's image size (checked: two whole numbers an image may have), after checking what else it declares:
    1 or 3 channels, at most MAX_CLASSES classes, no key twice."""
    from simclr_hpc.data.limits import MAX_CLASSES, check_size

    if doc["channels"] not in (1, 3) or isinstance(doc["channels"], bool):
        raise ValueError(f"channels {str(doc['channels'])[:20]!r} is neither 1 nor 3")
    if not isinstance(doc["classes"], list) or len(doc["classes"]) > MAX_CLASSES:
        raise ValueError(f"classes must be a list of at most {MAX_CLASSES:,} names")
    keys = [k for split in splits.values() for k in split.keys]
    if len(set(keys)) != len(keys):
        raise ValueError("a sample key is listed twice; keys must be unique")
    size = doc.get("image_size")
    if size is None:
        return None
    if not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) for v in size):
        raise ValueError(f"image_size {str(size)[:40]} is not [height, width]")
    check_size(size[1], size[0])
    return tuple(size)


def read_index(shards_dir: str | Path) -> DatasetIndex:
    """Read ``index.json`` of ``shards_dir``; a missing or malformed one is a DataError saying how to build it."""
    root = Path(shards_dir)
    build = f"build it with `simclr-hpc data shards SOURCE {shlex.quote(str(root))}`"
    if not root.is_dir():
        raise DataError(f"{root}: shard directory not found; {build}")
    path = root / INDEX
    if not path.is_file():
        raise DataError(f"{path}: not found (no shards here, or an interrupted write); {build}")
    try:
        doc = read_json(path, "shard index")
    except FileError as err:
        detail = err.lines[0].removeprefix(f"{path}: ")
        raise DataError(f"{path}: not a valid shard index ({detail}); {build}") from None
    try:
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
        if not isinstance(doc["splits"], dict) or not isinstance(doc["splits"].get("train"), dict):
            raise ValueError("splits must be an object with at least a train split")
        splits = {}
        for name, s in doc["splits"].items():
            shards = [_shard(x) for x in s["shards"]]
            if not isinstance(s["keys"], list) or not all(isinstance(k, str) for k in s["keys"]):
                raise ValueError(f"split {name}: keys must be a list of strings")
            keys, labels = s["keys"], _labels(s["labels"], name, doc)
            if len(keys) != len(labels) or len(keys) != sum(x.count for x in shards):
                raise ValueError(
                    f"split {name}: {len(keys)} keys, {len(labels)} labels, shard counts sum to "
                    f"{sum(x.count for x in shards)}"
                )
            names = [str(n) for n in s["names"]] if "names" in s else None
            if names is not None and len(names) != len(keys):
                raise ValueError(f"split {name}: {len(keys)} keys but {len(names)} file names")
            splits[name] = SplitIndex(keys, labels, shards, names)
        size = _sizes(doc, splits)
        return DatasetIndex(
            root=root,
            source=str(doc["source"]),
            classes=[str(c) for c in doc["classes"]],
            image_size=tuple(size) if size else None,
            channels=int(doc["channels"]),
            image_format=str(doc["image_format"]),
            seed=int(doc["seed"]),
            val_fraction=float(doc["val_fraction"]),
            splits=splits,
            content_hash=str(doc["content_hash"]),
            labelled=bool(doc.get("labelled", True)),
            eval_split=str(doc.get("eval_split", "test")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a valid shard index ({exc}); {build}") from None


def has_index(shards_dir: str | Path) -> bool:
    """Whether ``shards_dir`` holds an ``index.json`` (written last and atomically, so: whether it is whole)."""
    return (Path(shards_dir) / INDEX).is_file()


def index_num_classes(shards_dir: str | Path) -> int | None:
    """Class count recorded in a shard directory's ``index.json``, or None when there is none (not built yet)."""
    path = Path(shards_dir) / INDEX
    if not path.is_file():
        return None
    try:
        index = read_json(path, "shard index")
    except FileError:
        return None
    if not isinstance(index, dict):
        return None
    if isinstance(index.get("num_classes"), int):
        return index["num_classes"]
    names = index.get("classes") or index.get("class_names")
    return len(names) if isinstance(names, list) else None
