"""``report.md``, PNG plots and ``results.csv`` for a study: the paper's three analyses with seeds and intervals.

Statistics (all on top-1 as a fraction, shown in percent; the functions are in ``stats.py``):

* Means carry a 95% t-interval over runs: ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (sd with n-1). With n = 1 there is
  no interval and the table says so.
* Distillation gain of a (teacher, student, seed) = top-1 of the distilled student - top-1 of the same student's
  labels-only baseline with the same seed. Same-base vs cross-base: for every (student, seed) that has both kinds of teacher,
  the mean gain from same-base teachers is paired with the mean gain from cross-base teachers; a paired t-test
  (``scipy.stats.ttest_rel``) over those pairs gives the p-value.
* Transfer slope: ordinary least squares of chance-normalised top-1 (``(top1 - 1/k) / (1 - 1/k)``) on ``log2 k`` over
  individual runs, i.e. the change in chance-normalised accuracy per doubling of the class count, with a 95% t-interval
  (n - 2 degrees of freedom). Runs of one seed share an encoder, so the interval assumes more independence than there is.

An analysis is a summary (``summaries.py``: rows -> dataclass) and a renderer (``render.py``: dataclass -> Markdown and
plots); ``ANALYSES`` lists them in report order, so a new analysis is one new pair there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from simclr_hpc import fsutil
from simclr_hpc.study import render, summaries
from simclr_hpc.study.aggregate import Row, collect, summary, write_csv
from simclr_hpc.study.runs import Plan


@dataclass(frozen=True)
class Analysis:
    """One analysis of the report: ``summarize(rows)`` (None = not in this study) and ``render(summary, out_dir)``."""

    summarize: Callable[[list[Row]], Any]
    render: Callable[[Any, Path], render.Section]


ANALYSES = (
    Analysis(summaries.summarize_finetune, render.render_finetune),
    Analysis(summaries.summarize_distill, render.render_distill),
    Analysis(summaries.summarize_transfer, render.render_transfer),
)
"""The report's sections, in order."""


@dataclass
class Report:
    """What ``write_report`` produced: paths and the three headline findings (one line each)."""

    path: Path
    csv: Path
    plots: list[Path] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def write_report(plan: Plan, out_dir: str | Path | None = None) -> Report:
    """Aggregate every planned run and write ``report.md``, ``results.csv`` and the plots into ``<study>/report/``."""
    out = Path(out_dir) if out_dir else plan.study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(plan)
    csv_path = write_csv(rows, out / "results.csv")
    counts = summary(rows)
    sections = []
    for analysis in ANALYSES:
        result = analysis.summarize(rows)
        if result is not None:
            sections.append(analysis.render(result, out))
    findings = [s.finding for s in sections if s.finding]
    lines = render.render_header(plan.study.name, plan.study.seeds, counts, len(rows), findings)
    for section in sections:
        lines += section.lines
    lines += render.render_missing(rows, out)
    path = out / "report.md"
    fsutil.write_text_atomic(path, "\n".join(lines))
    return Report(path, csv_path, [p for s in sections for p in s.plots], findings, counts)
