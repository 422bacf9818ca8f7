"""Typed cells of a study's results, and the seed as the unit: what every summary groups rows by.

A :class:`Split` is where an accuracy was measured (section, protocol, dataset, label fraction, head layer, kind of
transfer target, k): an encoder's cell is (encoder, split), and its baselines are found by the split they share
(:meth:`Split.baseline_split`), never by slicing a tuple. :func:`per_seed` averages any metric within each seed (class
subsets, students, encoders of one seed are not independent), so that intervals count seeds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from simclr_hpc.study.aggregate import DEFAULT_EVAL_IMAGES, Row
from simclr_hpc.study.verdict import Estimate, accuracy_interval, mean_interval


@dataclass(frozen=True, order=True)
class Split:
    """Where an accuracy was measured: the same split means the same labelled images, eval images and protocol."""

    section: str
    """``finetune`` or ``transfer``."""
    dataset: str
    protocol: str
    label_fraction: float = -1.0
    """Fine-tuning: the labelled fraction (-1 where it does not apply, so splits sort)."""
    head_layer: int = -1
    """Fine-tuning: the projection-head layer under the classifier."""
    kind: str = ""
    """Transfer: ``within`` (class subsets of one dataset) or ``across`` (whole datasets)."""
    k: int = 0
    """Transfer: the number of classes."""

    @classmethod
    def of(cls, row: Row) -> "Split":
        if row.section == "finetune":
            return cls(
                "finetune", row.dataset or "", row.protocol or "", float(row.label_fraction), int(row.head_layer or 0)
            )
        return cls("transfer", row.dataset or "", row.protocol or "", kind=row.kind or "", k=int(row.k or 0))

    def baseline_split(self, baseline: str) -> "Split":
        """The split a baseline of this cell was run on: head layer 0 (baselines have no head); pixels are linear."""
        out = replace(self, head_layer=0) if self.section == "finetune" else self
        return replace(out, protocol="linear") if baseline == "pixels" else out

    @property
    def where(self) -> str:
        """``mnist, 10% labels, head layer 0`` or ``shapes20 k=5`` / ``shapes10 all classes``."""
        if self.section == "finetune":
            return f"{self.dataset}, {100 * self.label_fraction:g}% labels, head layer {self.head_layer}"
        return f"{self.dataset} {'k=' + str(self.k) if self.kind == 'within' else 'all classes'}"


def finished(rows: Iterable[Row], baselines: bool = False, **match) -> list[Row]:
    """Rows of finished runs that have a top-1 and whose fields equal ``match``; baseline runs (random, pixels) only
    with ``baselines``."""
    return [
        r
        for r in rows
        if r.status == "done"
        and r.top1 is not None
        and (baselines or not r.baseline)
        and all(getattr(r, k) == v for k, v in match.items())
    ]


def group(rows: Iterable[Row], key: Callable[[Row], object]) -> dict:
    """``key(row) -> [rows]``, keys in first-seen order."""
    out: dict = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return dict(out)


def per_seed(rows: Iterable[Row], metric: str | Callable[[Row], float | None] = "top1") -> dict[int, float]:
    """Mean of ``metric`` within each seed (several subsets, students or encoders of one seed count once)."""
    get = metric if callable(metric) else (lambda r: getattr(r, metric))
    values: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        v = get(r)
        if v is not None and not math.isnan(float(v)):
            values[r.seed].append(float(v))
    return {s: sum(v) / len(v) for s, v in sorted(values.items())}


def accuracy(rows: list[Row], metric: str = "top1") -> Estimate:
    """Mean of an accuracy over seeds (averaged within each seed first) with the bounded logit interval; each seed's
    eval-set size is the mean of its runs' (``verdict.accuracy_interval``)."""
    rows = [r for r in rows if getattr(r, metric) is not None]
    values = per_seed(rows, metric)
    sizes = per_seed(rows, lambda r: r.eval_images or DEFAULT_EVAL_IMAGES)
    return accuracy_interval(list(values.values()), [round(sizes[s]) for s in values])


def seed_mean(rows: list[Row], metric: str | Callable[[Row], float | None]) -> Estimate:
    """Mean of any metric over seeds (averaged within each seed first) with its t-interval."""
    return mean_interval(list(per_seed(rows, metric).values()))


def eval_sizes(rows: list[Row]) -> str:
    """The eval-set size(s) behind a cell, e.g. ``"1000"`` or ``"480-520"``."""
    sizes = sorted({r.eval_images for r in rows if r.eval_images})
    if not sizes:
        return "n/a"
    return str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
