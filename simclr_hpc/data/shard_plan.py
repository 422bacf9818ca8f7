"""What a shard build will write, decided before any shard is written: the splits, their order, and every shard.

A build (``shard_writer.build``) first computes its :class:`BuildPlan` from the source and the settings: which source
samples go to which split (``carve_splits``), in which order (seeded, so that every shard holds every class), and so
which samples each ``<split>-NNNNNN.tar`` holds. The plan is saved in ``OUT_DIR/_build/plan.json`` (with the file
paths of a file source, so that the tasks of a Slurm array never list the source again); each finished shard gets a
done record ``_build/done/<shard>.json`` (its sha256, size, count and image sizes), written after the tar is renamed
into place. A rerun with the same plan (same source contents and settings: the plan's hash) keeps every shard whose
record, size and end-of-archive marker check out and writes only the others; once every shard is done,
``index.json`` is written from the plan and the records, and ``_build/`` (which the build wrote) is removed.

No torch here (numpy and the standard library): a login node plans a Slurm array build.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simclr_hpc import fsutil
from simclr_hpc.data.sources import DataError, Source
from simclr_hpc.data.tarcheck import end_marker_missing
from simclr_hpc.readers import FileError, read_json

SPLITS = ("train", "val", "test")
IMAGE_EXTS = ("png", "jpg")
BUILD_DIR = "_build"
"""The build's own bookkeeping inside OUT_DIR (plan and done records); removed once index.json is written."""
PLAN_FILE = "plan.json"
DONE_DIR = "done"
PARTIAL = ".partial-"
"""Infix of a shard being written: ``.<shard>.partial-<host>-<pid>``, renamed to ``<shard>`` once whole."""


@dataclass
class PlannedSplit:
    """One split to write: where its samples come from, in the order they are written."""

    origin: str
    """The source split its samples come from (``train`` for a carved val or test)."""
    positions: np.ndarray
    """Their positions in that source split, in written order."""
    labels: np.ndarray
    files: list[str] | None = None
    """Their image files (file sources), in written order."""

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class PlannedShard:
    """One tar of the plan: the samples ``start:stop`` (in written order) of ``split``."""

    name: str
    split: str
    start: int
    stop: int


@dataclass
class BuildPlan:
    """Every decision of a build (see the module docstring); ``digest`` identifies it."""

    root: Path
    source: str
    classes: list[str]
    image_format: str
    channels: int
    seed: int
    val_fraction: float
    shard_size: int
    eval_split: str
    splits: dict[str, PlannedSplit]

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def shards(self) -> list[PlannedShard]:
        """Every shard, train's first, in name order."""
        return [
            PlannedShard(f"{name}-{i // self.shard_size:06d}.tar", name, i, min(i + self.shard_size, len(split)))
            for name, split in self.splits.items()
            for i in range(0, len(split), self.shard_size)
        ]

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "classes": self.classes,
            "image_format": self.image_format,
            "channels": self.channels,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "shard_size": self.shard_size,
            "eval_split": self.eval_split,
            "splits": {
                name: {
                    "origin": s.origin,
                    "positions": s.positions.tolist(),
                    "labels": s.labels.tolist(),
                    "files": s.files,
                }
                for name, s in self.splits.items()
            },
        }

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of every decision (a plan is not changed once made: the digest is computed once)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, root: Path, doc: dict) -> BuildPlan:
        splits = {
            name: PlannedSplit(
                s["origin"],
                np.asarray(s["positions"], dtype=np.int64),
                np.asarray(s["labels"], dtype=np.int64),
                s["files"],
            )
            for name, s in doc["splits"].items()
        }
        return cls(
            root,
            doc["source"],
            list(doc["classes"]),
            doc["image_format"],
            int(doc["channels"]),
            int(doc["seed"]),
            float(doc["val_fraction"]),
            int(doc["shard_size"]),
            doc["eval_split"],
            splits,
        )

    def build_dir(self) -> Path:
        return self.root / BUILD_DIR

    def done_path(self, shard: PlannedShard) -> Path:
        return self.build_dir() / DONE_DIR / f"{shard.name}.json"

    def save(self) -> None:
        (self.build_dir() / DONE_DIR).mkdir(parents=True, exist_ok=True)
        doc = {"digest": self.digest, **self.to_json()}
        fsutil.write_text_atomic(self.build_dir() / PLAN_FILE, json.dumps(doc))

    def done(self, shard: PlannedShard) -> dict | None:
        """The done record of ``shard`` when the tar beside it is the one it describes (size and end marker), else
        None (not written, or written by another plan, or changed since)."""
        path, tar = self.done_path(shard), self.root / shard.name
        if not path.is_file() or not tar.is_file():
            return None
        try:
            record = read_json(path, "shard done record")
        except FileError:
            return None
        if (
            not isinstance(record, dict)
            or record.get("plan") != self.digest
            or record.get("bytes") != tar.stat().st_size
        ):
            return None
        return record if end_marker_missing(tar) is None else None


def load_plan(out_dir: str | Path) -> BuildPlan:
    """The plan saved in ``out_dir/_build/plan.json``; a DataError naming it when there is none or it is unreadable."""
    root = Path(out_dir)
    path = root / BUILD_DIR / PLAN_FILE
    try:
        doc = read_json(path, "shard build plan")
        plan = BuildPlan.from_json(root, doc)
    except FileError as err:
        raise DataError(
            f"{path}: no readable build plan ({err.lines[0]}); start the build with `simclr-hpc data "
            f"shards SOURCE {root}`"
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: not a build plan ({exc}); remove {root / BUILD_DIR} and start the build again"
        ) from None
    if doc.get("digest") != plan.digest:
        raise DataError(
            f"{path}: its digest does not match its contents (edited?); remove {root / BUILD_DIR} and "
            "start the build again"
        )
    return plan


def _stratified_take(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of about ``fraction`` of each class (at least 1 of any class with 2+ samples), sorted."""
    taken = []
    for cls in np.unique(labels):
        pos = np.flatnonzero(labels == cls)
        n = int(round(len(pos) * fraction))
        n = min(max(n, 1 if len(pos) >= 2 else 0), len(pos) - 1)
        taken.append(rng.permutation(pos)[:n])
    return np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)


def carve_splits(
    source: Source, val_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, PlannedSplit], str]:
    """The splits to write, in the order their samples are written, and the name of the evaluation split.

    A source without a test split gets a stratified ``test_fraction`` of train as ``test``, unless it has its own val
    split (then that is the evaluation split); ``val_fraction`` of train becomes ``val``. Train and val are shuffled
    (seeded) so that every shard holds every class (a shuffle buffer cannot mix a shard of one class)."""
    rng = np.random.default_rng([seed, 2108])
    chosen = {name: (name, np.arange(len(split))) for name, split in source.splits.items()}
    eval_split = "test"

    def carve(fraction: float) -> np.ndarray:
        origin, train = chosen["train"]
        taken = _stratified_take(source.splits["train"].labels[train], fraction, rng)
        chosen["train"] = (origin, np.delete(train, taken))
        return train[taken]

    if "test" not in chosen and "val" in chosen:
        eval_split = "val"  # the source's own validation set (ImageNet's val/): the split results are reported on
    elif "test" not in chosen and source.classes:  # unlabeled images only pretrain: nothing to evaluate on
        chosen["test"] = ("train", carve(test_fraction))
    if val_fraction > 0:
        chosen["val"] = ("train", carve(val_fraction))
    for name in ("train", "val"):
        if name in chosen:
            origin, pos = chosen[name]
            chosen[name] = (origin, pos[rng.permutation(len(pos))])
    out = {}
    for name in (n for n in SPLITS if n in chosen):
        origin, pos = chosen[name]
        split = source.splits[origin]
        files = [str(split.files[p]) for p in pos] if split.files is not None else None
        out[name] = PlannedSplit(origin, pos, split.labels[pos], files)
    return out, eval_split
