"""The numbers of each analysis of the report, as dataclasses: one ``summarize_*`` per study section, nothing rendered.

Each ``summarize_*(rows)`` takes every row of the study (``aggregate.collect``) and returns its summary, or None when the
study plans no run of that section. Only finished runs with a top-1 enter the statistics (``stats.py``); the report
lists the others. ``render.py`` formats a summary; ``report.py`` pairs each summary with its renderer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from simclr_hpc.study.aggregate import Row
from simclr_hpc.study.stats import Interval, PairedTest, Slope, ols_slope, paired_test, t_interval


def finished(rows: list[Row], **match) -> list[Row]:
    """Rows of finished runs that have a top-1 and whose fields equal ``match``."""
    return [r for r in rows if r.status == "done" and r.top1 is not None
            and all(getattr(r, k) == v for k, v in match.items())]


def _top1(rows: list[Row]) -> Interval:
    return t_interval([r.top1 for r in rows])


@dataclass
class FinetuneCell:
    """One (encoder, protocol, label fraction, head layer) cell: top-1 over its finished seeds."""

    encoder: str
    protocol: str
    label_fraction: float
    head_layer: int
    top1: Interval
    runs: list[Row]


@dataclass
class Contrast:
    """Top-1 of the lowest vs the highest label fraction, pooled over every layer and seed."""

    low_fraction: float
    high_fraction: float
    low: Interval
    high: Interval


@dataclass
class FinetuneSummary:
    """Fine-tuning by label fraction and projection-head layer."""

    cells: list[FinetuneCell]
    """Cells with at least one finished run, sorted by (encoder, protocol, label fraction, head layer)."""
    best: FinetuneCell | None
    """The cell with the highest mean top-1 (the first in order on a tie)."""
    fractions: Contrast | None
    """None with a single label fraction."""
    best_layer: int | None
    """Head layer with the highest mean top-1 pooled over fractions and seeds; None with a single layer."""


def summarize_finetune(rows: list[Row]) -> FinetuneSummary | None:
    """Section 1 of the report."""
    if not any(r.section == "finetune" for r in rows):
        return None
    ft = finished(rows, section="finetune")
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in ft:
        groups[(r.encoder, r.protocol, r.label_fraction, r.head_layer)].append(r)
    cells = [FinetuneCell(*key, _top1(groups[key]), groups[key]) for key in sorted(groups)]
    if not cells:
        return FinetuneSummary([], None, None, None)
    best = max(cells, key=lambda c: c.top1.mean)
    fracs = sorted({c.label_fraction for c in cells})
    contrast = None
    if len(fracs) > 1:
        contrast = Contrast(fracs[0], fracs[-1], _top1([r for r in ft if r.label_fraction == fracs[0]]),
                            _top1([r for r in ft if r.label_fraction == fracs[-1]]))
    layers = sorted({c.head_layer for c in cells})
    best_layer = None
    if len(layers) > 1:
        by_layer = {layer: _top1([r for r in ft if r.head_layer == layer]).mean for layer in layers}
        best_layer = max(by_layer, key=by_layer.get)
    return FinetuneSummary(cells, best, contrast, best_layer)


@dataclass
class Group:
    """A named teacher or student with its base model and top-1 over its finished runs."""

    name: str
    base: str
    top1: Interval
    runs: list[Row]


@dataclass
class DistillPair:
    """One planned (teacher, student) pair: the distilled student's top-1 and its gain over its own baseline."""

    teacher: str
    student: str
    same_base: bool
    top1: Interval
    gain: Interval
    """Distilled top-1 - the same student's baseline top-1 with the same seed, over seeds."""
    runs: list[Row]


@dataclass
class DistillSummary:
    """Distillation: teachers, labels-only baselines, pairs, and the paired same-base vs cross-base test."""

    teachers: list[Group]
    baselines: list[Group]
    pairs: list[DistillPair]
    units: int
    """(student, seed) units with both a same-base and a cross-base gain: the pairs of the test."""
    test: PairedTest | None
    """None with fewer than 2 units."""
    same: Interval | None
    """Mean same-base gain per unit, over units (with the test)."""
    cross: Interval | None


def _gains(rows: list[Row], baseline: dict[tuple, Row]) -> dict[tuple[str, str], list[tuple[Row, float]]]:
    """(teacher, student) -> (finished distill run, its gain) for every run whose baseline of the same seed finished."""
    gains: dict[tuple[str, str], list[tuple[Row, float]]] = defaultdict(list)
    for r in rows:
        base = baseline.get((r.student, r.seed))
        if r.section == "distill" and r.status == "done" and r.top1 is not None and base is not None:
            gains[(r.teacher, r.student)].append((r, r.top1 - base.top1))
    return gains


def _same_vs_cross(gains: dict, same_base: dict[tuple[str, str], bool]) -> tuple[int, PairedTest | None, list, list]:
    """Pair, per (student, seed), the mean gain from same-base teachers with the mean gain from cross-base teachers."""
    per_unit: dict[tuple[str, int], dict[bool, list[float]]] = defaultdict(lambda: {True: [], False: []})
    for (teacher, student), got in gains.items():
        for r, g in got:
            per_unit[(student, r.seed)][same_base[(teacher, student)]].append(g)
    units = sorted(u for u, d in per_unit.items() if d[True] and d[False])
    same = [sum(per_unit[u][True]) / len(per_unit[u][True]) for u in units]
    cross = [sum(per_unit[u][False]) / len(per_unit[u][False]) for u in units]
    return len(units), paired_test(same, cross, [f"{s}/s{seed}" for s, seed in units]), same, cross


def summarize_distill(rows: list[Row]) -> DistillSummary | None:
    """Section 2 of the report."""
    if not any(r.section in ("distill", "baseline", "teacher") for r in rows):
        return None
    baseline = {(r.student, r.seed): r for r in finished(rows, section="baseline")}
    teacher_runs: dict[str, list[Row]] = defaultdict(list)
    for r in finished(rows, section="teacher"):
        teacher_runs[r.teacher].append(r)
    teacher_base = {r.teacher: r.teacher_base for r in rows if r.section == "teacher"}
    teachers = [Group(name, teacher_base[name], _top1(teacher_runs.get(name, [])), teacher_runs.get(name, []))
                for name in sorted(teacher_base)]
    student_base = {r.student: r.student_base for r in rows if r.section in ("baseline", "distill")}
    baselines = []
    for name in sorted(student_base):
        runs = [r for (s, _), r in baseline.items() if s == name]
        baselines.append(Group(name, student_base[name], _top1(runs), runs))
    same_base = {(r.teacher, r.student): bool(r.same_base) for r in rows if r.section == "distill"}
    gains = _gains(rows, baseline)
    pairs = [DistillPair(t, s, same_base[(t, s)], _top1([r for r, _ in gains.get((t, s), [])]),
                         t_interval([g for _, g in gains.get((t, s), [])]), [r for r, _ in gains.get((t, s), [])])
             for t, s in sorted(same_base)]
    units, test, same, cross = _same_vs_cross(gains, same_base)
    if test is None:
        return DistillSummary(teachers, baselines, pairs, units, None, None, None)
    return DistillSummary(teachers, baselines, pairs, units, test, t_interval(same), t_interval(cross))


@dataclass
class TransferCell:
    """One (encoder, protocol, kind, dataset, k) cell: top-1 and chance-normalised top-1 over its finished runs."""

    encoder: str
    protocol: str
    kind: str
    dataset: str
    k: int
    top1: Interval
    norm: Interval
    runs: list[Row]


@dataclass
class SlopeFit:
    """Slope of chance-normalised top-1 on log2 k over one (encoder, protocol, within a dataset | across datasets)."""

    encoder: str
    protocol: str
    label: str
    """``within <dataset>`` or ``across datasets (confounded with dataset)``."""
    n_runs: int
    fit: Slope | None
    """None with fewer than 3 runs or a single value of k."""


@dataclass
class TransferSummary:
    """Transfer by number of classes."""

    cells: list[TransferCell]
    """Within-dataset groups first, then across; k ascending within a group."""
    slopes: list[SlopeFit]

    @property
    def headline(self) -> SlopeFit | None:
        """The first within-dataset slope that could be fitted: the report's transfer finding."""
        return next((s for s in self.slopes if s.fit is not None and s.label.startswith("within")), None)


def _slopes(done: list[Row], groups: list[tuple]) -> list[SlopeFit]:
    out = []
    for enc, proto in sorted({(g[0], g[1]) for g in groups}):
        for kind in ("within", "across"):
            datasets = sorted({g[3] for g in groups if g[:3] == (enc, proto, kind)}) if kind == "within" else [None]
            for dataset in datasets:
                sel = [r for r in done if r.encoder == enc and r.protocol == proto and r.kind == kind
                       and (dataset is None or r.dataset == dataset) and r.chance_norm_top1 is not None]
                if not sel:
                    continue
                label = f"within {dataset}" if kind == "within" else "across datasets (confounded with dataset)"
                out.append(SlopeFit(enc, proto, label, len(sel),
                                    ols_slope([r.k for r in sel], [r.chance_norm_top1 for r in sel])))
    return out


def summarize_transfer(rows: list[Row]) -> TransferSummary | None:
    """Section 3 of the report."""
    planned = [r for r in rows if r.section == "transfer"]
    if not planned:
        return None
    done = finished(rows, section="transfer")
    groups = sorted({(r.encoder, r.protocol, r.kind, r.dataset) for r in planned},
                    key=lambda g: (g[0], g[1], g[2] != "within", g[3]))
    cells = []
    for group in groups:
        runs = [r for r in done if (r.encoder, r.protocol, r.kind, r.dataset) == group]
        for k in sorted({r.k for r in runs if r.k}):
            cell = [r for r in runs if r.k == k]
            cells.append(TransferCell(*group, k, _top1(cell), t_interval([r.chance_norm_top1 for r in cell]), cell))
    return TransferSummary(cells, _slopes(done, groups))
