"""Seeded, class-balanced subsets of a split: label fractions (fine-tuning, distillation) and k-class subsets (transfer).

Both work on the label array of a split in index order (``read_index(dir).split(name).labels``) and return sorted
positions into it, so they are cheap, need no image reads, and map to sample keys with ``[keys[i] for i in indices]``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from simclr_hpc.data.sources import DataError


def class_balanced_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of ``fraction`` of each class's samples (rounded, at least 1 per class), chosen with ``seed``.

    Per class, so a 1 % subset of an imbalanced dataset keeps its class proportions and no class vanishes. The same
    labels, fraction and seed always give the same positions; a larger fraction with the same seed gives a superset.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"label fraction {fraction}: must be in (0, 1]")
    labels = np.asarray(labels)
    chosen = []
    for cls in np.unique(labels):
        pos = np.flatnonzero(labels == cls)
        rng = np.random.default_rng([seed, int(cls), 7919])
        n = max(1, int(round(len(pos) * fraction)))
        chosen.append(rng.permutation(pos)[:n])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def class_order(available, draw: int, seed: int) -> list[int]:
    """A random order of the ``available`` classes, drawn from ``(seed, draw)``: the k-class subsets of one draw are
    its first k classes, so they are nested (2 within 5 within 10 ...), and each seed draws its own."""
    rng = np.random.default_rng([seed, draw, 104729])
    return [int(c) for c in rng.permutation(np.asarray(sorted(int(c) for c in available)))]


def class_subset(
    labels: np.ndarray, k: int, class_seed: int, images_per_class: int = 0, seed: int = 0
) -> tuple[np.ndarray, list[int]]:
    """``(positions, classes)``: the first ``k`` classes of draw ``class_seed``'s order of the classes for ``seed``
    (:func:`class_order`) and, of each, ``images_per_class`` samples chosen with ``seed`` (0 = all of them).

    ``classes`` is sorted; remap labels with ``label_map(classes)`` so the model sees 0..k-1. The same (seed, draw)
    gives nested subsets across k; another seed or draw gives another order. A class with fewer images than asked
    keeps all it has.
    """
    labels = np.asarray(labels)
    available = np.unique(labels)
    if k < 1 or k > len(available):
        raise DataError(
            f"class subset: k={k} but the split has {len(available)} classes; "
            f"choose 1 <= transfer.num_classes <= {len(available)}"
        )
    if images_per_class < 0:
        raise DataError(f"class subset: images_per_class={images_per_class} must be >= 0 (0 = all)")
    classes = sorted(class_order(available, class_seed, seed)[:k])
    chosen = []
    for cls in classes:
        pos = np.flatnonzero(labels == cls)
        if images_per_class:
            pos = np.random.default_rng([seed, cls, 15485863]).permutation(pos)[:images_per_class]
        chosen.append(pos)
    return np.sort(np.concatenate(chosen)), classes


def label_map(classes: list[int]) -> dict[int, int]:
    """Original label -> 0..k-1 in the order of ``classes`` (as returned by ``class_subset``)."""
    return {int(c): i for i, c in enumerate(classes)}


def positions_for_classes(labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """Sorted positions of every sample whose label is in ``classes`` (e.g. the test split of a k-class transfer)."""
    return np.flatnonzero(np.isin(np.asarray(labels), np.asarray(classes)))


def positions_from_file(
    path: str | Path, keys: list[str], names: list[str] | None = None, field: str = "finetune.label_subset_file"
) -> tuple[np.ndarray, str]:
    """``(positions, sha256)``: the sorted positions of exactly the images a subset file lists, and the file's hash.

    One image per line, named by its shard key (``train-0001234``) or by its original file name (``n01440764_10026.JPEG``,
    as in google-research/simclr's ``imagenet_subsets/`` 1 % and 10 % lists, or VISSL's subset files; file names are
    what ``index.json`` recorded for sources read from files). Blank lines and ``#`` comments are ignored. A line that
    names no image, or a file name two images share, is an error naming the line: a subset that silently shrank would
    make numbers incomparable with the published ones.
    """
    from simclr_hpc.data.sources import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{field}: {path}: file not found")
    data = path.read_bytes()
    by_key = {key: i for i, key in enumerate(keys)}
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(names or []):
        by_name.setdefault(name, []).append(i)
    chosen, problems = set(), []
    for number, raw in enumerate(data.decode(errors="replace").splitlines(), 1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        found = [by_key[entry]] if entry in by_key else by_name.get(entry, [])
        if len(found) != 1:
            what = (
                "names no image of the split (neither a shard key nor a file name)"
                if not found
                else f"is the file name of {len(found)} images; list their shard keys instead"
            )
            problems.append(f"{field}: {path} line {number}: {entry!r} {what}")
        else:
            chosen.add(found[0])
    if problems:
        raise DataError(
            problems[:20]
            + ([f"{field}: {path}: {len(problems) - 20} more lines like these"] if len(problems) > 20 else [])
        )
    if not chosen:
        raise DataError(f"{field}: {path} lists no image")
    return np.asarray(sorted(chosen), dtype=np.int64), hashlib.sha256(data).hexdigest()
