"""The paper's three findings as one primary contrast each, a value per seed, and their verdicts as one family.

Each contrast is declared in the study file (``finetune.primary``, ``distill.primary``, ``transfer.primary``, with its
equivalence margin; ``alpha`` for the family) and computed here with the seed as the unit: whatever a seed holds
several of (encoders, students, class subsets) is averaged within the seed first. ``verdict.judge`` then tests the
per-seed values (Holm over the family; reproduced / contradicted / absent / inconclusive).

* **Head layer** (SimCLRv2): top-1 at ``primary.head_layer`` - top-1 at layer 0, under ``primary.protocol`` (full
  fine-tuning by default) at ``primary.label_fraction`` (the smallest by default), averaged over the section's
  encoders. Claimed > 0.
* **Distillation** (the paper's same-base claim): at ``primary.label_fraction``, each student's gain from a teacher is
  its distilled top-1 - its labels-only baseline's (same seed, same labelled subset, same steps); per student, the
  mean gain from same-base teachers - the mean gain from cross-base teachers; averaged over students. Claimed > 0.
* **Transfer** (fewer classes transfer better): on ``primary.dataset``'s nested class subsets, d' of each run
  (``separability.py``: constant in k when every class pair is equally separable), averaged per k over the seed's
  subset draws, then its least-squares slope on log2 k, averaged over encoders. Claimed < 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from simclr_hpc.study.aggregate import Row
from simclr_hpc.study.cells import finished, group, per_seed
from simclr_hpc.study.schema import Study
from simclr_hpc.study.stats import log2_slope
from simclr_hpc.study.verdict import Effect, Verdict, judge


def head_layer_protocol(study: Study) -> str:
    """The protocol of the head-layer contrast: declared, else ``full`` if the section runs it, else ``linear``."""
    ft = study.finetune
    return ft.primary.protocol or ("full" if "full" in ft.protocols else ft.protocols[0])


def head_layer_effect(rows: list[Row], study: Study) -> Effect | None:
    """Top-1 at the primary head layer - at layer 0, per seed (averaged over encoders); None when not testable."""
    ft = study.finetune
    if ft is None or len(ft.head_layers) < 2:
        return None
    primary, protocol = ft.primary, head_layer_protocol(study)
    fraction = primary.label_fraction or min(ft.fractions(protocol) or ft.label_fractions)
    done = finished(rows, section="finetune", protocol=protocol, label_fraction=fraction)
    diffs: dict[int, list[float]] = {}
    for runs in group(done, lambda r: r.encoder).values():
        top = per_seed([r for r in runs if r.head_layer == primary.head_layer])
        base = per_seed([r for r in runs if r.head_layer == 0])
        for seed in sorted(set(top) & set(base)):
            diffs.setdefault(seed, []).append(top[seed] - base[seed])
    return Effect(
        f"fine-tuning from projection-head layer {primary.head_layer} beats fine-tuning from the encoder output",
        f"top-1 at head layer {primary.head_layer} - head layer 0, {protocol} fine-tuning at "
        f"{100 * fraction:g}% labels",
        +1,
        {s: sum(v) / len(v) for s, v in diffs.items()},
        primary.margin_pp / 100,
        "pp",
        f"{len(ft.encoders)} encoder(s)",
    )


@dataclass(frozen=True)
class Gain:
    """One distilled student's gain over its own labels-only baseline in one seed."""

    teacher: str
    student: str
    same_base: bool
    seed: int
    gain: float
    top1: float


def distill_gains(rows: list[Row], fraction: float) -> list[Gain]:
    """Every finished distillation at ``fraction`` whose student's baseline (same seed) finished too."""
    baseline = {(r.student, r.seed): r.top1 for r in finished(rows, section="baseline", label_fraction=fraction)}
    return [
        Gain(r.teacher, r.student, bool(r.same_base), r.seed, r.top1 - baseline[(r.student, r.seed)], r.top1)
        for r in finished(rows, section="distill", label_fraction=fraction)
        if (r.student, r.seed) in baseline
    ]


def same_minus_cross(gains: list[Gain]) -> dict[int, float]:
    """Per seed: the mean over students of (mean same-base gain - mean cross-base gain), students with both only."""
    out: dict[int, list[float]] = {}
    for (_, seed), mine in group(gains, lambda g: (g.student, g.seed)).items():
        same = [g.gain for g in mine if g.same_base]
        cross = [g.gain for g in mine if not g.same_base]
        if same and cross:
            out.setdefault(seed, []).append(sum(same) / len(same) - sum(cross) / len(cross))
    return {s: sum(v) / len(v) for s, v in sorted(out.items())}


def distill_fraction(study: Study) -> float:
    dist = study.distill
    return dist.primary.label_fraction or min(dist.label_fractions)


def distill_effect(rows: list[Row], study: Study) -> Effect | None:
    """Same-base - cross-base gain per seed (averaged over students); None when not testable."""
    dist = study.distill
    if dist is None:
        return None
    fraction = distill_fraction(study)
    per = same_minus_cross(distill_gains(rows, fraction))
    bases = sorted(
        {r.teacher_base for r in rows if r.section == "teacher"}
        | {r.student_base for r in rows if r.section in ("distill", "baseline")} - {None}
    )
    notes = []
    if len(bases) < 3:
        notes.append(
            f"only {len(bases)} base model(s) ({', '.join(bases)}): with fewer than 3, same-base vs "
            "cross-base is also bigger vs smaller teacher (capacity), not only same vs different base"
        )
    return Effect(
        "distillation gains more from a teacher of the same base model",
        f"gain over the labels-only baseline from same-base - cross-base teachers, teachers fine-tuned on "
        f"{100 * fraction:g}% labels",
        +1,
        per,
        dist.primary.margin_pp / 100,
        "pp",
        f"{len(dist.students)} student(s)",
        notes,
    )


def transfer_target(study: Study) -> tuple[str, str] | None:
    """(dataset, protocol) of the transfer contrast, or None without a within-dataset target."""
    tr = study.transfer
    if tr is None or not tr.within:
        return None
    return tr.primary.dataset or tr.within[0].dataset, tr.primary.protocol or tr.protocols[0]


def seed_slopes(runs: list[Row], metric: str) -> dict[int, float]:
    """Per seed: the slope on log2 k of ``metric`` averaged per k over the seed's subset draws."""
    out = {}
    for seed, mine in group(runs, lambda r: r.seed).items():
        by_k = {k: sum(getattr(r, metric) for r in rs) / len(rs) for k, rs in group(mine, lambda r: r.k).items()}
        slope = log2_slope(list(by_k), list(by_k.values()))
        if slope == slope:  # not NaN: at least 2 values of k
            out[seed] = slope
    return out


def transfer_effect(rows: list[Row], study: Study) -> Effect | None:
    """Slope of d' on log2 k per seed (averaged over encoders); None when not testable."""
    target = transfer_target(study)
    if target is None:
        return None
    dataset, protocol = target
    done = [
        r
        for r in finished(rows, section="transfer", kind="within", dataset=dataset, protocol=protocol)
        if r.dprime is not None
    ]
    slopes: dict[int, list[float]] = {}
    for runs in group(done, lambda r: r.encoder).values():
        for seed, slope in seed_slopes(runs, "dprime").items():
            slopes.setdefault(seed, []).append(slope)
    ceiling = [r for r in done if r.eval_images and round(r.top1 * r.eval_images) >= r.eval_images]
    notes = (
        [
            f"{len(ceiling)} of {len(done)} runs score 100 %: their d' is a lower bound (half an image wrong), "
            "which flattens a fall with k"
        ]
        if ceiling
        else []
    )
    return Effect(
        "transfer is better to datasets with fewer classes",
        f"slope of d' on log2 k (per doubling of the classes), {dataset} nested class subsets, {protocol}",
        -1,
        {s: sum(v) / len(v) for s, v in sorted(slopes.items())},
        study.transfer.primary.margin,
        "d' per doubling",
        f"{len(study.transfer.encoders)} encoder(s) and the subset draws",
        notes,
    )


@dataclass
class VerdictSummary:
    """The family of findings and their verdicts."""

    verdicts: list[Verdict]
    alpha: float


EFFECTS = (head_layer_effect, distill_effect, transfer_effect)
"""The findings a study can test, in report order: a new finding is one more function here."""


def summarize_verdicts(rows: list[Row], study: Study) -> VerdictSummary | None:
    """The verdict of each finding the study tests (Holm over them), or None when it tests none."""
    effects = [e for e in (effect(rows, study) for effect in EFFECTS) if e is not None]
    if not effects:
        return None
    return VerdictSummary(judge(effects, study.alpha), study.alpha)
