"""``report.md``, its snippets, PNG plots and ``results.csv`` for a study: the paper's three analyses with seeds,
intervals and verdicts.

The report's frame (title, headline, run counts, runs without a result) is written here, its sections by
``render.py`` and ``render_findings.py``. An analysis is a summary (rows and the study -> a dataclass, or None when
the study has nothing for it) and a renderer (dataclass -> a ``render.Section``: Markdown, plots, headline bullets,
snippets). ``ANALYSES`` lists them in report order; the headline is what the sections contribute, in that order, so a
new analysis is one new pair here. The statistics are described in ``verdict.py`` (verdicts), ``cells.py`` (the seed
as the unit), ``baselines.py``, ``properties.py`` and ``separability.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from simclr_hpc import fsutil, rundir
from simclr_hpc.study import baselines, findings, properties, render, render_findings, summaries
from simclr_hpc.study.aggregate import Row, collect, not_done, summary, write_csv
from simclr_hpc.study.runs import Plan
from simclr_hpc.study.schema import Study


@dataclass(frozen=True)
class Analysis:
    """One analysis of the report: ``summarize(rows, study)`` (None: not in this study), ``render(summary, out)``."""

    summarize: Callable[[list[Row], Study], Any]
    render: Callable[[Any, Path], render.Section]


def _or_none(summarize: Callable[[list[Row], Study], list]) -> Callable[[list[Row], Study], list | None]:
    """A summary that is a list of cells, as a section that is absent when there are none."""
    return lambda rows, study: summarize(rows, study) or None


def _properties(rows: list[Row], study: Study):
    return properties.summarize_properties(rows, study) if any(r.section == "finetune" for r in rows) else None


ANALYSES = (
    Analysis(findings.summarize_verdicts, render_findings.render_verdicts),
    Analysis(_or_none(baselines.summarize_baselines), render_findings.render_baselines),
    Analysis(_or_none(properties.summarize_pretrain), render_findings.render_pretrain),
    Analysis(summaries.summarize_finetune, render.render_finetune),
    Analysis(_properties, render_findings.render_properties),
    Analysis(summaries.summarize_distill, render.render_distill),
    Analysis(summaries.summarize_transfer, render.render_transfer),
)
"""The report's sections, in order."""


@dataclass
class Report:
    """What ``write_report`` produced: paths, the headline bullets and the run counts."""

    path: Path
    csv: Path
    plots: list[Path] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    """The headline's bullets (Markdown, ``- `` first): verdicts, then numbers below a baseline."""
    counts: dict[str, int] = field(default_factory=dict)
    snippets: list[Path] = field(default_factory=list)
    """``<name>.md`` files beside the report (e.g. ``verdicts.md``) that READMEs include verbatim."""


def write_report(plan: Plan, out_dir: str | Path | None = None) -> Report:
    """Aggregate every planned run and write ``report.md``, its snippets, ``results.csv`` and the plots into
    ``<study>/report/``."""
    out = Path(out_dir) if out_dir else rundir.report_dir(plan.study.root, plan.study.name)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(plan)
    csv_path = write_csv(rows, out / "results.csv")
    counts = summary(rows)
    sections = []
    for analysis in ANALYSES:
        result = analysis.summarize(rows, plan.study)
        if result is not None:
            sections.append(analysis.render(result, out))
    headline = [bullet for s in sections for bullet in s.headline]
    lines = render_header(plan.study.name, plan.study.seeds, counts, len(rows), headline)
    for section in sections:
        lines += section.lines
    lines += render_missing(rows, out)
    path = out / "report.md"
    fsutil.write_text_atomic(path, "\n".join(lines))
    merged: dict[str, list[str]] = {}  # sections that add to one snippet do so in report order
    for section in sections:
        for name, snippet in section.snippets.items():
            merged.setdefault(name, []).extend(snippet)
    snippets = []
    for name, snippet in merged.items():
        snippets.append(out / f"{name}.md")
        fsutil.write_text_atomic(snippets[-1], "\n".join(snippet) + "\n")
    return Report(path, csv_path, [p for s in sections for p in s.plots], headline, counts, snippets)


def render_header(
    study_name: str, seeds: list[int], counts: dict[str, int], total: int, headline: list[str]
) -> list[str]:
    """Title, the headline bullets every section contributed, and the run counts."""
    lines = [f"# Study `{study_name}`", ""]
    if headline:
        lines += ["## Headline", "", *headline, ""]
    return lines + [
        f"Runs: {total} planned; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ". "
        f"Seeds: {', '.join(map(str, seeds))}. Every run's numbers are in [results.csv](results.csv); each "
        "table cell links its run directories (labelled by seed).",
        "",
    ]


def render_missing(rows: list[Row], out: Path) -> list[str]:
    """Every planned run without a result, with its status and error, and the runs whose result is stale."""
    missing = not_done(rows)
    lines = ["## Runs without a result", ""]
    if missing:
        lines += [
            f"{len(missing)} of {len(rows)} planned runs have no result; they are excluded from the statistics "
            "above and listed here.",
            "",
            "| run | status | error | run directory |",
            "|---|---|---|---|",
        ]
        for r in missing:
            err = (r.error or "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {r.key} | {r.status} | {err} | [{r.run_dir}]({os.path.relpath(r.run_dir, out)}) |")
    else:
        lines.append("None: every planned run finished.")
    stale = [r for r in rows if r.stale]
    if stale:
        lines += [
            "",
            f"{len(stale)} run(s) have a result made with a different config than the study now asks for "
            "(edited study file?): " + ", ".join(r.key for r in stale),
        ]
    return lines + [""]
