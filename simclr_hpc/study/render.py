"""Markdown of the report's descriptive sections: one ``render_*`` per summary of ``summaries.py``, formatting only
(the report's frame, its title, headline and runs without a result, is ``report.py``'s).

Each renderer returns a :class:`Section`: its Markdown lines, the plots it wrote (``plots.py``), its headline bullets
and any named snippets (Markdown files written beside the report for READMEs to include verbatim). Accuracies are
fractions shown in percent; ``fmt_ci`` writes a mean with its 95% interval.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from simclr_hpc.study import plots
from simclr_hpc.study.aggregate import Row
from simclr_hpc.study.cells import eval_sizes
from simclr_hpc.study.summaries import SECONDARY, DistillFraction, DistillSummary, FinetuneSummary, TransferSummary


@dataclass
class Section:
    """One rendered analysis of the report."""

    lines: list[str]
    plots: list[Path] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    """Bullets (``- ...``) for the report's headline, in this section's order."""
    snippets: dict[str, list[str]] = field(default_factory=dict)
    """Name -> Markdown lines written as ``<name>.md`` beside the report (what READMEs include verbatim)."""


def pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def fmt_ci(iv, signed: bool = False, scale: float = 100.0, digits: int = 1) -> str:
    """``"83.2 [80.1, 86.3]"`` (a fraction in percent, or ``scale=1`` for other units); ``"83.2 (n=1, no CI)"`` for
    one unit."""
    if iv is None or iv.n == 0 or math.isnan(iv.mean):
        return "n/a"

    def num(v: float, sign: bool) -> str:
        return f"{scale * v:+.{digits}f}" if sign else f"{scale * v:.{digits}f}"

    if iv.n < 2:
        return f"{num(iv.mean, signed)} (n=1, no CI)"
    return f"{num(iv.mean, signed)} [{num(iv.lo, signed)}, {num(iv.hi, signed)}]"


def link_runs(rows: list[Row], report_dir: Path) -> str:
    """Markdown links from the report to each run's directory, labelled by seed (and subset draw)."""
    out = []
    for row in rows:
        label = f"s{row.seed}" + (f"d{row.subset_draw}" if row.subset_draw is not None else "")
        out.append(f"[{label}]({os.path.relpath(row.run_dir, report_dir)})")
    return " ".join(out)


def render_finetune(s: FinetuneSummary, out: Path) -> Section:
    """Section 1: the cells per protocol, the head-layer contrasts per protocol and fraction, the plot."""
    lines = [
        "## 1. Fine-tuning: label fraction and projection-head layer",
        "",
        "Top-1 (%) on the evaluation split, mean and 95% logit t-interval over seeds (n = seeds). Protocols are "
        "never pooled.",
        "",
        "| protocol | encoder | label fraction | head layer | eval images | n | top-1 % [95% CI] | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.split.protocol} | {c.encoder} | {100 * c.split.label_fraction:g}% | {c.split.head_layer} | "
        f"{eval_sizes(c.runs)} | {c.top1.n} | {fmt_ci(c.top1)} | {link_runs(c.runs, out)} |"
        for c in s.cells
    ]
    lines.append("")
    if not s.cells:
        return Section(lines + ["No fine-tuning run has finished yet.", ""])
    if s.contrasts:
        lines += [
            "### Head layer against layer 0, per protocol and label fraction",
            "",
            f"Top-1 at the head layer - at layer 0 in points, per seed (averaged over encoders), with a paired "
            f"t-interval over seeds; {SECONDARY}: the head-layer verdict is decided on the primary contrast "
            "alone (see Verdicts).",
            "",
            "| protocol | label fraction | head layer | n seeds | effect pp [95% CI] | reading |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c.protocol} | {100 * c.label_fraction:g}% | {c.head_layer} | {c.effect.n} | "
            f"{fmt_ci(c.effect, True)} | {c.reading} |"
            for c in s.contrasts
        ]
        lines.append("")
    path = plots.finetune(s, out / "finetune.png")
    lines += [f"![fine-tuning accuracy by label fraction and head layer]({path.name})", ""]
    return Section(lines, [path])


def _group_table(title: str, what: str, groups, out: Path) -> list[str]:
    lines = [
        f"#### {title}",
        "",
        f"| {what} | base | eval images | n | top-1 % [95% CI] | runs |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {g.name} | {g.base} | {eval_sizes(g.runs)} | {g.top1.n} | {fmt_ci(g.top1)} | {link_runs(g.runs, out)} |"
        for g in groups
    ]
    return lines + [""]


def _distill_fraction(f: DistillFraction, out: Path) -> list[str]:
    lines = [f"### Teachers fine-tuned on {100 * f.label_fraction:g}% of the labels", ""]
    lines += _group_table("Teachers", "teacher", f.teachers, out)
    lines += _group_table("Students on the labelled subset alone (baselines)", "student", f.baselines, out)
    lines += [
        "#### Distilled students (every training image, no labels)",
        "",
        "| teacher | student | pair | eval images | n | student top-1 % [95% CI] | gain pp [95% CI] | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p.teacher} | {p.student} | {'same base' if p.same_base else 'cross base'} | {eval_sizes(p.runs)} | "
        f"{p.top1.n} | {fmt_ci(p.top1)} | {fmt_ci(p.gain, True)} | {link_runs(p.runs, out)} |"
        for p in f.pairs
    ]
    lines += [
        "",
        f"Gain over labels-only, every pair averaged per seed: {fmt_ci(f.gain, True)} pp (n = {f.gain.n} "
        f"seeds). Same-base - cross-base gain per student, averaged per seed: "
        f"{fmt_ci(f.same_minus_cross, True)} pp (n = {f.same_minus_cross.n} seeds).",
        "",
    ]
    return lines


def render_distill(s: DistillSummary, out: Path) -> Section:
    """Section 2: per label fraction, teachers, baselines, pairs and the per-seed contrasts, and the heatmap."""
    lines = [
        "## 2. Distillation: teacher x student, same base vs cross base",
        "",
        "SimCLRv2's regime: each teacher is its SimCLR encoder fully fine-tuned on a fraction of the labels; each "
        "student (never started from its teacher's weights) is distilled on every training image without "
        "labels, and its baseline is the same student trained on the same labelled subset alone with the same "
        "steps. Gain = distilled top-1 - that baseline's (same seed), in points (pp); intervals are over seeds, "
        "each seed's students averaged first. A teacher's own accuracy bounds what it can teach.",
        "",
    ]
    for fraction in s.fractions:
        lines += _distill_fraction(fraction, out)
    if not any(f.pairs for f in s.fractions):
        return Section(lines + ["No distillation pair has finished with its baseline yet.", ""])
    path = plots.distill(s, out / "distill.png")
    bullets = [_distill_bullet(f) for f in s.fractions if f.pairs]
    return Section(
        lines + [f"![distillation gain heatmap and teacher accuracy]({path.name})", ""],
        [path],
        snippets={"findings": bullets},
    )


def _names(groups) -> str:
    return ", ".join(f"{g.name} {fmt_ci(g.top1)}" for g in groups)


def _distill_bullet(f: DistillFraction) -> str:
    return (
        f"- distillation at {100 * f.label_fraction:g}% labels: teachers {_names(f.teachers)} %; students on "
        f"those labels alone {_names(f.baselines)} %; distilled without labels, gain over labels-only "
        f"{fmt_ci(f.gain, True)} pp (every pair, n = {f.gain.n} seeds), same-base - cross-base "
        f"{fmt_ci(f.same_minus_cross, True)} pp."
    )


def _slope_lines(s: TransferSummary) -> list[str]:
    lines = [
        "### Slopes on log2 k, per seed",
        "",
        "Per seed, each k's value averaged over the seed's subset draws, then the least-squares slope on log2 k; "
        "mean and t-interval over seeds. d' (per doubling of k) is constant in k when every class pair is equally "
        "separable; chance-normalised top-1 (pp per doubling) falls with k even then and is shown for comparison "
        "only.",
        "",
        "| encoder | protocol | dataset | quantity | n seeds | slope per doubling [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for fit in s.slopes:
        dprime = fit.metric == "dprime"
        value = fmt_ci(fit.slope, True, 1.0, 2) if dprime else fmt_ci(fit.slope, True) + " pp"
        quantity = "d'" if dprime else "chance-normalised"
        lines.append(f"| {fit.encoder} | {fit.protocol} | {fit.dataset} | {quantity} | {fit.slope.n} | {value} |")
    return lines + [""]


def render_transfer(s: TransferSummary, out: Path) -> Section:
    """Section 3: the cells by k (top-1, chance-normalised, d', noise), the slope table and the plot."""
    lines = [
        "## 3. Transfer vs number of classes",
        "",
        "Within a dataset: nested random k-class subsets (each draw a random order of the classes, k = its first "
        "k; every seed draws its own), a fixed number of training images per class, all classes once. Across: "
        "whole datasets, as the paper compared them (confounded with the dataset). Top-1 and chance-normalised "
        "top-1 in %, d' from top-1 under the equal-variance model (`separability.py`); mean [95% CI] over "
        "seeds, each seed's draws averaged first. Test SE: the standard error test sampling alone gives a seed's "
        "mean top-1 (binomial, from the eval-set size and the draws averaged); seed SD: the spread of the per-seed "
        "means it is part of. Ceiling: runs at 100 % (d' a lower bound).",
        "",
        "| encoder | protocol | kind | dataset | k | eval images | n | draws | top-1 % [95% CI] | "
        "chance-norm. % | d' [95% CI] | test SE pp | seed SD pp | ceiling | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in s.cells:
        sp = c.split
        lines.append(
            f"| {c.encoder} | {sp.protocol} | {sp.kind} | {sp.dataset} | {sp.k} | {eval_sizes(c.runs)} | "
            f"{c.top1.n} | {c.draws} | {fmt_ci(c.top1)} | {fmt_ci(c.norm)} | "
            f"{fmt_ci(c.dprime, False, 1.0, 2)} "
            f"| {pct(c.test_se)} | {pct(c.seed_sd)} | {c.ceiling} | {link_runs(c.runs, out)} |"
        )
    worst = s.noisiest
    if worst is not None:
        lines += [
            "",
            f"Test sampling is at most {100 * worst.test_share:.0f} % of the variance across seeds of a "
            f"within-dataset cell ({worst.split.dataset} k = {worst.split.k}: test SE {pct(worst.test_se)} pp "
            f"of a seed SD of {pct(worst.seed_sd)} pp).",
        ]
    lines += ["", *_slope_lines(s)]
    if not s.cells:
        return Section(lines)
    path = plots.transfer(s, out / "transfer.png")
    return Section(
        lines + [f"![transfer accuracy vs number of classes]({path.name})", ""],
        [path],
        snippets={"findings": _transfer_bullets(s)},
    )


def _transfer_bullets(s: TransferSummary) -> list[str]:
    """Per within-dataset series: top-1, chance-normalised top-1 and d' by k, and the slope of d'."""
    out = []
    series = {(c.encoder, c.split.protocol, c.split.dataset) for c in s.cells if c.split.kind == "within"}
    for enc, protocol, dataset in sorted(series):
        cells = [
            c
            for c in s.cells
            if (c.encoder, c.split.protocol, c.split.dataset, c.split.kind) == (enc, protocol, dataset, "within")
        ]
        ks = " / ".join(str(c.split.k) for c in cells)
        slope = next(
            (
                f.slope
                for f in s.slopes
                if (f.encoder, f.protocol, f.dataset, f.metric) == (enc, protocol, dataset, "dprime")
            ),
            None,
        )
        out.append(
            f"- transfer of {enc} ({protocol}) to {dataset} subsets, k = {ks}: top-1 "
            f"{' / '.join(pct(c.top1.mean) for c in cells)} %, chance-normalised "
            f"{' / '.join(pct(c.norm.mean) for c in cells)} %, d' "
            f"{' / '.join(f'{c.dprime.mean:.2f}' for c in cells)} (slope {fmt_ci(slope, True, 1.0, 2)} "
            f"per doubling, n = {slope.n if slope else 0} seeds)."
        )
    return out
