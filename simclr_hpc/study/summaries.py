"""The numbers of each descriptive section of the report, as dataclasses: one ``summarize_*(rows, study)`` per study
section, nothing rendered. The verdicts are ``findings.py``'s; the baselines ``baselines.py``'s.

Only finished runs with a top-1 enter (the report lists the others). Every interval is over seeds, each seed's runs
averaged first (``cells.per_seed``), so ``n`` counts seeds everywhere in these tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simclr_hpc.study.aggregate import Row
from simclr_hpc.study.cells import Split, accuracy, finished, group, per_seed, seed_mean
from simclr_hpc.study.findings import Gain, distill_gains, same_minus_cross, seed_slopes
from simclr_hpc.study.verdict import Estimate, mean_interval

SECONDARY = "secondary (unadjusted 95% interval)"


def _label(effect: Estimate, claim_sign: int) -> str:
    """A secondary contrast's reading: which side of 0 its interval excludes, if any."""
    if effect.n < 3 or not effect.excludes_zero:
        return "not shown"
    return "paper's direction" if (effect.mean > 0) == (claim_sign > 0) else "against the paper (contradicted)"


@dataclass
class FinetuneCell:
    """One (encoder, split) cell: top-1 over seeds."""

    encoder: str
    split: Split
    top1: Estimate
    runs: list[Row]


@dataclass
class LayerContrast:
    """Top-1 at a head layer - at layer 0, per seed, averaged over encoders: one protocol and label fraction."""

    protocol: str
    label_fraction: float
    head_layer: int
    effect: Estimate
    reading: str
    """``paper's direction``, ``against the paper (contradicted)`` or ``not shown``."""


@dataclass
class FinetuneSummary:
    """Fine-tuning by protocol, label fraction and projection-head layer (never averaged across protocols)."""

    cells: list[FinetuneCell]
    contrasts: list[LayerContrast]


def _layer_contrasts(done: list[Row]) -> list[LayerContrast]:
    out = []
    for (protocol, fraction), runs in sorted(group(done, lambda r: (r.protocol, r.label_fraction)).items()):
        layers = sorted({r.head_layer for r in runs})
        for layer in (x for x in layers if x > 0 and 0 in layers):
            diffs: dict[int, list[float]] = {}
            for mine in group(runs, lambda r: r.encoder).values():
                top, base = (
                    per_seed([r for r in mine if r.head_layer == layer]),
                    per_seed([r for r in mine if r.head_layer == 0]),
                )
                for seed in set(top) & set(base):
                    diffs.setdefault(seed, []).append(top[seed] - base[seed])
            effect = mean_interval([sum(v) / len(v) for v in diffs.values()], bound=1.0)
            out.append(LayerContrast(protocol, fraction, layer, effect, _label(effect, +1)))
    return out


def summarize_finetune(rows: list[Row], study=None) -> FinetuneSummary | None:
    """Section 1 of the report."""
    if not any(r.section == "finetune" for r in rows):
        return None
    done = finished(rows, section="finetune")
    cells = [
        FinetuneCell(enc, split, accuracy(runs), runs)
        for (enc, split), runs in sorted(
            group(done, lambda r: (r.encoder, Split.of(r))).items(),
            key=lambda kv: (kv[0][1].protocol, kv[0][0], kv[0][1]),
        )
    ]
    return FinetuneSummary(cells, _layer_contrasts(done))


@dataclass
class Group:
    """A named teacher or student with its base model and top-1 over its seeds."""

    name: str
    base: str
    top1: Estimate
    runs: list[Row]


@dataclass
class DistillPair:
    """One (teacher, student) pair: the distilled student's top-1 and its gain over its own baseline."""

    teacher: str
    student: str
    same_base: bool
    top1: Estimate
    gain: Estimate
    """Distilled top-1 - the same student's baseline top-1 with the same seed, over seeds."""
    runs: list[Row]


@dataclass
class DistillFraction:
    """Distillation at one label fraction: teachers, labels-only baselines, pairs, and the per-seed contrasts."""

    label_fraction: float
    teachers: list[Group]
    baselines: list[Group]
    pairs: list[DistillPair]
    gain: Estimate
    """Gain over labels-only averaged over every pair, per seed: does distillation help at all."""
    same_minus_cross: Estimate
    """Mean same-base gain - mean cross-base gain per student, averaged over students, per seed."""


@dataclass
class DistillSummary:
    fractions: list[DistillFraction]


def _groups(runs: list[Row], name: str, base: str) -> list[Group]:
    return [
        Group(n, getattr(mine[0], base) or "", accuracy(mine), mine)
        for n, mine in sorted(group(runs, lambda r: getattr(r, name)).items())
    ]


def _pairs(rows: list[Row], gains: list[Gain], fraction: float) -> list[DistillPair]:
    done = {(r.teacher, r.student, r.seed): r for r in finished(rows, section="distill", label_fraction=fraction)}
    out = []
    for (teacher, student), mine in sorted(group(gains, lambda g: (g.teacher, g.student)).items()):
        runs = [done[(teacher, student, g.seed)] for g in mine]
        out.append(
            DistillPair(
                teacher,
                student,
                mine[0].same_base,
                accuracy(runs),
                mean_interval([g.gain for g in mine], bound=1.0),
                runs,
            )
        )
    return out


def summarize_distill(rows: list[Row], study=None) -> DistillSummary | None:
    """Section 2 of the report: one part per label fraction."""
    planned = [r for r in rows if r.section in ("distill", "baseline", "teacher")]
    if not planned:
        return None
    out = []
    for fraction in sorted({r.label_fraction for r in planned if r.label_fraction is not None}):
        gains = distill_gains(rows, fraction)
        per = group(gains, lambda g: g.seed)
        overall = mean_interval([sum(g.gain for g in v) / len(v) for v in per.values()], bound=1.0)
        out.append(
            DistillFraction(
                fraction,
                _groups(finished(rows, section="teacher", label_fraction=fraction), "teacher", "teacher_base"),
                _groups(finished(rows, section="baseline", label_fraction=fraction), "student", "student_base"),
                _pairs(rows, gains, fraction),
                overall,
                mean_interval(list(same_minus_cross(gains).values()), bound=1.0),
            )
        )
    return DistillSummary(out)


@dataclass
class TransferCell:
    """One (encoder, split) transfer cell over its seeds (each seed's subset draws averaged first)."""

    encoder: str
    split: Split
    top1: Estimate
    norm: Estimate
    """Chance-normalised top-1 (descriptive: it falls with k by itself)."""
    dprime: Estimate
    draws: int
    """Class-subset draws per seed."""
    ceiling: int
    """Runs at 100 % (their d' is a lower bound)."""
    test_se: float
    """Standard error that test sampling alone gives a seed's mean top-1: the binomial SE of one run from its
    eval-set size, averaged over runs, over the square root of the draws averaged per seed."""
    seed_sd: float
    """Standard deviation of the per-seed mean top-1 across seeds (NaN below 2 seeds)."""
    runs: list[Row]

    @property
    def test_share(self) -> float:
        """The share of the variance across seeds that test sampling alone would give (NaN without a spread)."""
        return (self.test_se / self.seed_sd) ** 2 if self.seed_sd > 0 else math.nan


@dataclass
class SlopeFit:
    """Per-seed slope on log2 k of one metric for one (encoder, protocol, dataset), over seeds."""

    encoder: str
    protocol: str
    dataset: str
    metric: str
    slope: Estimate


@dataclass
class TransferSummary:
    cells: list[TransferCell]
    """Within-dataset cells first, then across; k ascending within a group."""
    slopes: list[SlopeFit]

    @property
    def noisiest(self) -> TransferCell | None:
        """The within-dataset cell where test sampling is the largest share of the spread across seeds."""
        shares = [c for c in self.cells if c.split.kind == "within" and c.test_share == c.test_share]
        return max(shares, key=lambda c: c.test_share, default=None)


def _transfer_cell(encoder: str, split: Split, runs: list[Row]) -> TransferCell:
    run_se = [math.sqrt(r.top1 * (1 - r.top1) / r.eval_images) for r in runs if r.eval_images]
    seed_top1 = list(per_seed(runs).values())
    mean = sum(seed_top1) / len(seed_top1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in seed_top1) / (len(seed_top1) - 1)) if len(seed_top1) > 1 else math.nan
    draws = max(len(v) for v in group(runs, lambda r: r.seed).values())
    test_se = sum(run_se) / len(run_se) / math.sqrt(draws) if run_se else math.nan
    ceiling = sum(1 for r in runs if r.eval_images and round(r.top1 * r.eval_images) >= r.eval_images)
    return TransferCell(
        encoder,
        split,
        accuracy(runs),
        seed_mean(runs, "chance_norm_top1"),
        seed_mean(runs, "dprime"),
        draws,
        ceiling,
        test_se,
        sd,
        runs,
    )


def _order(item) -> tuple:
    (encoder, split), _ = item
    return encoder, split.protocol, split.kind != "within", split.dataset, split.k


def summarize_transfer(rows: list[Row], study=None) -> TransferSummary | None:
    """Section 3 of the report."""
    if not any(r.section == "transfer" for r in rows):
        return None
    done = [r for r in finished(rows, section="transfer") if r.k]
    cells = [
        _transfer_cell(enc, split, runs)
        for (enc, split), runs in sorted(group(done, lambda r: (r.encoder, Split.of(r))).items(), key=_order)
    ]
    slopes = []
    within = [r for r in done if r.kind == "within" and r.dprime is not None]
    for (enc, protocol, dataset), runs in sorted(group(within, lambda r: (r.encoder, r.protocol, r.dataset)).items()):
        for metric in ("dprime", "chance_norm_top1"):
            per = seed_slopes(runs, metric)
            if per:
                slopes.append(SlopeFit(enc, protocol, dataset, metric, mean_interval(list(per.values()))))
    return TransferSummary(cells, slopes)
