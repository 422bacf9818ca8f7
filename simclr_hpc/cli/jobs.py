"""``simclr-hpc jobs``, ``logs JOB`` and ``cancel JOB|--study S``: the run registry plus squeue/sacct."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc.cli.common import user_errors

RootOpt = Annotated[Path, typer.Option("--root", help="Directory holding every study's runs (run.root).")]
StudyOpt = Annotated[Optional[str], typer.Option("--study", help="Only this study.")]


def _check_study(study: str | None) -> None:
    from simclr_hpc.config import check_safe_name
    from simclr_hpc.launch import LaunchError

    if study is not None:
        try:
            check_safe_name(study, "--study")
        except ValueError as err:
            raise LaunchError(str(err)) from None


@user_errors
def _jobs(root: Path, study: str | None, all_: bool) -> None:
    from simclr_hpc.launch import refresh_all, study_registries

    _check_study(study)
    rows = refresh_all(study_registries(root, study))  # one query per launcher, across every study
    if not all_:
        rows = rows[-200:]
    if not rows:
        print(f"no jobs recorded under {root}" + (f" for study {study}" if study else ""))
        return
    why = any(r.reason and r.state != "COMPLETED" for r in rows)  # a REASON column only when a job has one
    header = ("JOB", "STATE", "STUDY", "STAGE", "RUN", "NODES", "SUBMITTED", "ELAPSED", "RESULT") + ("REASON",) * why
    table = [header] + [
        (
            r.job_id,
            r.state,
            r.study,
            r.stage,
            r.run_name,
            str(r.nodes),
            r.submitted_at.replace("+00:00", "Z"),
            *_progress_cells(r),
        )
        + ((r.reason[:100] if r.state != "COMPLETED" else "",) * why)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


HEADLINE = ("top1", "loss")  # what a result is judged by: accuracy where a stage measures it, else the final loss


def _progress_cells(rec) -> tuple[str, str]:
    """(elapsed, headline result) of a job's run: the run's wall time and top-1 (or loss) once result.json is there;
    while it runs, the time since its first logged step."""
    import json
    import time

    from simclr_hpc import rundir
    from simclr_hpc.train.metrics import format_duration

    result = rundir.Result.read(rec.run_dir)
    if result is not None:
        key = next((k for k in HEADLINE if isinstance(result.metrics.get(k), (int, float))), None)
        return format_duration(result.wall_s or 0.0), f"{key}={result.metrics[key]:.4f}" if key else "-"
    metrics_file = rundir.metrics_path(rec.run_dir)
    if rec.state == "RUNNING" and metrics_file.is_file():
        with open(metrics_file) as f:
            first = f.readline()
        try:
            return format_duration(time.time() - json.loads(first)["time"]), "-"
        except (ValueError, KeyError):
            pass
    return "-", "-"


def jobs(
    root: RootOpt = Path("runs"),
    study: StudyOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Every row, not only the last 200.")] = False,
) -> None:
    """What is queued, running and done: the registry's jobs with states from squeue (this user's jobs, one call),
    sacct and result.json, and why a failed job failed."""
    _jobs(root, study, all_)


def _lookup(root: Path, job: str):
    from simclr_hpc.launch import LaunchError, find_job
    from simclr_hpc.launch.slurm import JOB_ID

    if not JOB_ID.match(job):
        raise LaunchError(f"job {job!r}: not a job id (digits, or ARRAYID_INDEX)")
    found = find_job(root, job)
    if not found:
        raise LaunchError(f"job {job}: not in any registry under {root} (see `simclr-hpc jobs`, or pass --root)")
    return found


@user_errors
def _logs(root: Path, job: str, stdout: bool, task: int) -> None:
    from simclr_hpc.launch import LaunchError
    from simclr_hpc.launch.registry import log_paths

    for _, rec in _lookup(root, job):
        if task >= rec.tasks:
            raise LaunchError(f"--task {task}: job {rec.job_id} has {rec.tasks} task(s), 0..{rec.tasks - 1}")
        out, err = log_paths(rec.log_dir, rec.job_id, task)
        path = out if stdout else err
        print(f"==> {path} <==")
        print(path.read_text(errors="replace") if path.exists() else "(no log yet: the job has not started)")


def logs(
    job: Annotated[str, typer.Argument(help="Job id (123, 123_4, or an array id for every task).")],
    root: RootOpt = Path("runs"),
    stdout: Annotated[
        bool,
        typer.Option(
            "--stdout", help="Show the task's stdout (submitit's own lines and the result) instead of the training log."
        ),
    ] = False,
    task: Annotated[int, typer.Option("--task", min=0, help="Task (rank) whose log to show.")] = 0,
) -> None:
    """Print a job's training log: rank 0's stderr, where progress lines and errors go (--stdout for the other)."""
    _logs(root, job, stdout, task)


@user_errors
def _cancel(root: Path, job: str | None, study: str | None) -> None:
    from simclr_hpc.launch import LaunchError, cancel, refresh, study_registries

    if (job is None) == (study is None):
        raise LaunchError("cancel: give a JOB id or --study S (not both)")
    if job is not None:
        pairs = _lookup(root, job)
    else:
        _check_study(study)
        pairs = [(reg, rec) for reg in study_registries(root, study) for rec in refresh(reg) if not rec.finished]
    cancelled = cancel(pairs)
    print(f"cancelled {len(cancelled)} job(s)" + (f": {' '.join(cancelled)}" if cancelled else ""))


def cancel(
    job: Annotated[Optional[str], typer.Argument(help="Job id (an array id cancels every task).")] = None,
    study: StudyOpt = None,
    root: RootOpt = Path("runs"),
) -> None:
    """Cancel one job (or array), or every unfinished job of a study."""
    _cancel(root, job, study)


def register(app: typer.Typer) -> None:
    """Add ``jobs``, ``logs`` and ``cancel`` to the app."""
    app.command("jobs")(jobs)
    app.command("logs")(logs)
    app.command("cancel")(cancel)
