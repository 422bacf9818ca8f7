"""Markdown of the report: one ``render_*`` per summary of ``summaries.py``, formatting only (no statistics here).

Each renderer returns a :class:`Section`: its Markdown lines, the plots it wrote (``plots.py``) and its headline finding.
Numbers are top-1 fractions shown in percent; ``fmt_ci`` writes a mean with its 95% interval.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from simclr_hpc.study import plots
from simclr_hpc.study.aggregate import Row, not_done
from simclr_hpc.study.stats import Interval
from simclr_hpc.study.summaries import DistillSummary, FinetuneSummary, TransferSummary


@dataclass
class Section:
    """One rendered analysis of the report."""

    lines: list[str]
    plots: list[Path] = field(default_factory=list)
    finding: str | None = None
    """The headline finding (one line, no final period), or None when there is nothing to conclude yet."""


def pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def fmt_ci(iv: Interval, signed: bool = False) -> str:
    """``"83.2 [80.1, 86.3]"`` in percent; ``"83.2 (n=1, no CI)"`` when there is a single run."""
    if iv.n == 0:
        return "n/a"
    sign = "+" if signed and iv.mean >= 0 else ""
    if iv.n < 2:
        return f"{sign}{pct(iv.mean)} (n=1, no CI)"
    return f"{sign}{pct(iv.mean)} [{pct(iv.lo)}, {pct(iv.hi)}]"


def link_runs(rows: list[Row], report_dir: Path) -> str:
    """Markdown links from the report to each run's directory, labelled by seed (and class seed)."""
    out = []
    for row in rows:
        label = f"s{row.seed}" + (f"c{row.class_seed}" if row.class_seed is not None else "")
        out.append(f"[{label}]({os.path.relpath(row.run_dir, report_dir)})")
    return " ".join(out)


def _finetune_finding(s: FinetuneSummary) -> str:
    best = s.best
    text = (f"Fine-tuning: best cell is head layer {best.head_layer} at {100 * best.label_fraction:g}% labels "
            f"({best.encoder}, {best.protocol}): top-1 {fmt_ci(best.top1)}% (n={best.top1.n})")
    if s.fractions:
        f = s.fractions
        text += (f"; {100 * f.high_fraction:g}% vs {100 * f.low_fraction:g}% labels: "
                 f"{100 * (f.high.mean - f.low.mean):+.1f} pp (means over every layer and seed, n={f.high.n} vs "
                 f"{f.low.n})")
    if s.best_layer is not None:
        text += f"; best head layer on average: {s.best_layer}"
    return text


def render_finetune(s: FinetuneSummary, out: Path) -> Section:
    """Section 1: the table of cells, the accuracy-by-fraction plot and the finding."""
    lines = ["## 1. Fine-tuning: label fraction and projection-head layer", "",
             "Top-1 (%) on the evaluation split, mean and 95% t-interval over seeds; n = runs per cell.", "",
             "| encoder | protocol | label fraction | head layer | n | top-1 % [95% CI] | runs |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c.encoder} | {c.protocol} | {100 * c.label_fraction:g}% | {c.head_layer} | {c.top1.n} | "
              f"{fmt_ci(c.top1)} | {link_runs(c.runs, out)} |" for c in s.cells]
    lines.append("")
    if not s.cells:
        return Section(lines + ["No fine-tuning run has finished yet.", ""])
    path = plots.finetune(s, out / "finetune.png")
    finding = _finetune_finding(s)
    lines += [f"![fine-tuning accuracy by label fraction and head layer]({path.name})", "",
              f"**Finding.** {finding}.", ""]
    return Section(lines, [path], finding)


def _distill_tables(s: DistillSummary, out: Path) -> list[str]:
    lines = ["### Teachers", "", "| teacher | base | n | teacher top-1 % [95% CI] | runs |", "|---|---|---|---|---|"]
    lines += [f"| {g.name} | {g.base} | {g.top1.n} | {fmt_ci(g.top1)} | {link_runs(g.runs, out)} |" for g in s.teachers]
    lines += ["", "### Students without a teacher (baselines)", "",
              "| student | base | n | baseline top-1 % [95% CI] | runs |", "|---|---|---|---|---|"]
    lines += [f"| {g.name} | {g.base} | {g.top1.n} | {fmt_ci(g.top1)} | {link_runs(g.runs, out)} |"
              for g in s.baselines]
    lines += ["", "### Distilled students", "",
              "| teacher | student | pair | n | student top-1 % [95% CI] | gain pp [95% CI] | runs |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {p.teacher} | {p.student} | {'same base' if p.same_base else 'cross base'} | {p.top1.n} | "
              f"{fmt_ci(p.top1)} | {fmt_ci(p.gain, True)} | {link_runs(p.runs, out)} |" for p in s.pairs]
    return lines + [""]


def render_distill(s: DistillSummary, out: Path) -> Section:
    """Section 2: teachers, baselines, pairs, the paired same-base test, the gain heatmap and the finding."""
    lines = ["## 2. Distillation: teacher x student, same base vs cross base", "",
             "Gain = distilled student's top-1 - the same student's labels-only baseline (same seed), in percentage "
             "points (pp). Teachers' own accuracies are shown because teacher accuracy and the capacity gap are "
             "confounders of the same-base comparison.", "", *_distill_tables(s, out),
             "### Same base vs cross base (paired over student x seed)", ""]
    finding = None
    test = s.test
    if test is None:
        lines += [f"Not testable: {s.units} (student, seed) unit(s) have both a same-base and a cross-base teacher "
                  "finished; a paired test needs at least 2.", ""]
    else:
        lines += ["| n pairs | same-base gain pp [95% CI] | cross-base gain pp [95% CI] | difference pp [95% CI] | t | p |",
                  "|---|---|---|---|---|---|",
                  f"| {test.n} | {fmt_ci(s.same, True)} | {fmt_ci(s.cross, True)} | {fmt_ci(test.diff, True)} | "
                  f"{test.t:.2f} | {test.p:.3g} |", "",
                  "Pairs: " + ", ".join(test.pairs) + ". Test: two-sided paired t-test (scipy.stats.ttest_rel).", ""]
        verdict = "larger" if test.diff.mean > 0 else "smaller"
        finding = (f"Distillation: same-base gain {fmt_ci(s.same, True)} pp vs cross-base {fmt_ci(s.cross, True)} pp; "
                   f"same-base is {verdict} by {100 * test.diff.mean:+.1f} pp (paired t-test, n={test.n} student-seed "
                   f"pairs, p={test.p:.3g})")
        lines += [f"**Finding.** {finding}.", ""]
    if not s.pairs:
        return Section(lines, [], finding)
    path = plots.distill(s, out / "distill.png")
    lines += [f"![distillation gain heatmap and teacher accuracy]({path.name})", ""]
    return Section(lines, [path], finding)


def _slope_lines(s: TransferSummary) -> list[str]:
    lines = ["### Slope of chance-normalised top-1 on log2 k", "",
             "OLS over individual runs; slope in percentage points of chance-normalised top-1 per doubling of the number "
             "of classes, with a 95% t-interval (n - 2 df). Negative = fewer classes transfer better.", "",
             "| encoder | protocol | rows | n runs | slope pp / doubling [95% CI] | p |", "|---|---|---|---|---|---|"]
    for row in s.slopes:
        fit = row.fit
        if fit is None:
            lines.append(f"| {row.encoder} | {row.protocol} | {row.label} | {row.n_runs} | n/a (needs 3+ runs and 2+ "
                         "values of k) | |")
        else:
            lines.append(f"| {row.encoder} | {row.protocol} | {row.label} | {fit.n} | {100 * fit.slope:+.1f} "
                         f"[{100 * fit.lo:+.1f}, {100 * fit.hi:+.1f}] | {fit.p:.3g} |")
    return lines + [""]


def render_transfer(s: TransferSummary, out: Path) -> Section:
    """Section 3: the table by k, the slope table, the finding and the accuracy-vs-classes plot."""
    lines = ["## 3. Transfer vs number of classes", "",
             "Top-1 and chance-normalised top-1 ((top1 - 1/k) / (1 - 1/k): 0 = chance, 100 = perfect), in %. "
             "Within-dataset rows use random k-class subsets of one dataset (n = class subsets x seeds per k) at a fixed "
             "number of training images per class, which removes the dataset confound of the paper's comparison; "
             "across-dataset rows compare whole datasets as the paper did.", "",
             "| encoder | protocol | kind | dataset | k | n | top-1 % [95% CI] | chance-norm. % [95% CI] | runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c.encoder} | {c.protocol} | {c.kind} | {c.dataset} | {c.k} | {c.top1.n} | {fmt_ci(c.top1)} | "
              f"{fmt_ci(c.norm)} | {link_runs(c.runs, out)} |" for c in s.cells]
    lines += ["", *_slope_lines(s)]
    finding = None
    head = s.headline
    if head:
        fit = head.fit
        finding = (f"Transfer: chance-normalised top-1 changes by {100 * fit.slope:+.1f} pp per doubling of classes "
                   f"(95% CI [{100 * fit.lo:+.1f}, {100 * fit.hi:+.1f}], OLS on log2 k, n={fit.n} runs, {head.label}, "
                   f"{head.encoder} {head.protocol})")
        lines += [f"**Finding.** {finding}.", ""]
    if not s.cells:
        return Section(lines, [], finding)
    path = plots.transfer(s, out / "transfer.png")
    lines += [f"![transfer accuracy vs number of classes]({path.name})", ""]
    return Section(lines, [path], finding)


def render_header(study_name: str, seeds: list[int], counts: dict[str, int], total: int, findings: list[str]) -> list[str]:
    """Title, the headline findings (one bullet per section that has one) and the run counts."""
    lines = [f"# Study `{study_name}`", ""]
    if findings:
        lines += ["## Headline findings", "", *[f"- {f}" for f in findings], ""]
    return lines + [f"Runs: {total} planned; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ". "
                    f"Seeds: {', '.join(map(str, seeds))}. Every run's numbers are in [results.csv](results.csv); each "
                    "table cell links its run directories (labelled by seed).", ""]


def render_missing(rows: list[Row], out: Path) -> list[str]:
    """Every planned run without a result, with its status and error, and the runs whose result is stale."""
    missing = not_done(rows)
    lines = ["## Runs without a result", ""]
    if missing:
        lines += [f"{len(missing)} of {len(rows)} planned runs have no result; they are excluded from the statistics "
                  "above and listed here.", "", "| run | status | error | run directory |", "|---|---|---|---|"]
        for r in missing:
            err = (r.error or "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {r.key} | {r.status} | {err} | [{r.run_dir}]({os.path.relpath(r.run_dir, out)}) |")
    else:
        lines.append("None: every planned run finished.")
    stale = [r for r in rows if r.stale]
    if stale:
        lines += ["", f"{len(stale)} run(s) have a result made with a different config than the study now asks for "
                  "(edited study file?): " + ", ".join(r.key for r in stale)]
    return lines + [""]
