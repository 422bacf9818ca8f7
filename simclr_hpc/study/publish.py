"""What a study says about itself: where its runs stand (``study status``) and its report, written and published into
the tracking backends (``study report``). The CLI prints what these return."""

from __future__ import annotations

import csv
from pathlib import Path

from simclr_hpc import rundir
from simclr_hpc.study.aggregate import collect, not_done, summary
from simclr_hpc.study.plan import load_plan


def status_lines(path: Path) -> list[str]:
    """One line per stage with its counts by status, one per run that is not done (with why: its job's state and
    reason, or the failure the engine recorded), and the total. Job states are asked once (one squeue call)."""
    rows = collect(load_plan(path), refresh_jobs=True)
    by_stage: dict[str, dict[str, int]] = {}
    for row in rows:
        by_stage.setdefault(row.stage, {}).setdefault(row.status, 0)
        by_stage[row.stage][row.status] += 1
    lines = [
        f"{stage:9s} " + "  ".join(f"{k} {v}" for k, v in sorted(counts.items())) for stage, counts in by_stage.items()
    ]
    for row in not_done(rows):
        lines.append(f"  {row.status:8s} {row.key}" + (f"  ({row.error})" if row.error else ""))
    total = summary(rows)
    lines.append(f"total: {len(rows)} runs, " + ", ".join(f"{v} {k}" for k, v in sorted(total.items())))
    return lines


def headline(rep) -> list[str]:
    """The report's headline: its verdicts, then every number below a baseline (one line each)."""
    return [line.replace("**", "") for line in rep.headline]


def report_study(path: Path, out: Path | None = None, backends: str | None = None) -> tuple[object, list[str]]:
    """Aggregate every result.json into results.csv, write report.md with plots and intervals, and put the table into
    the tracking backends (``backends``: comma-separated; None: those the study's runs log to). Every check (the
    output directory, the backends) comes before anything is written. Returns the report and one line per
    destination."""
    from simclr_hpc.outputs import check_output_dir
    from simclr_hpc.study.report import write_report
    from simclr_hpc.train.tracking_report import publish_report, report_backends

    plan = load_plan(path)
    check_output_dir(
        out or rundir.report_dir(plan.study.root, plan.study.name), "--out", files=("report.md", "results.csv")
    )
    names = report_backends(backends, [run.cfg for run in plan.runs])
    rep = write_report(plan, out)
    with open(rep.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    lines = publish_report(
        names, plan.study.name, Path(plan.study.root), rep.path.parent, rows, [rep.path, rep.csv, *rep.plots]
    )
    return rep, lines
