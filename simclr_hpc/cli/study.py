"""``simclr-hpc study run|submit|status|report STUDY.yaml`` and ``simclr-hpc demo``: a whole study as one pipeline.

Thin commands over ``simclr_hpc.study``: validate and expand the study file (every problem one line, exit 2, nothing
written), then run it locally, submit it to Slurm, show where it stands, or write its report.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc.cli.common import user_errors
from simclr_hpc.readers import quote

study_app = typer.Typer(help="A whole study (pretrain -> finetune/distill arrays -> transfer array -> report).",
                        no_args_is_help=True)

StudyArg = Annotated[Path, typer.Argument(help="Study file, e.g. configs/studies/demo.yaml.")]
OnlyOpt = Annotated[Optional[list[str]], typer.Option("--only", help="Only runs of this stage (repeatable).")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Also hand out runs whose job is still queued or running (by default they are left to it).")]
RerunStaleOpt = Annotated[bool, typer.Option(
    "--rerun-stale", help="Rebuild shards and rerun finished runs that no longer match the study file (changed dataset "
                          "source or run settings); the old ones are moved aside as *.stale-<time>, never deleted.")]


def _plan(path: Path):
    """The expanded study; every schema, reference and run-config problem, one line each, before anything is written."""
    from simclr_hpc.study.plan import load_plan

    return load_plan(path)


def _stale(plan, path: Path, rerun_stale: bool) -> None:
    """Refuse a study whose shards or finished results were made from something else than it now says (one line per
    dataset, one for the runs); with ``rerun_stale`` move them aside so that they are built and run again."""
    from simclr_hpc.provenance import move_aside, stale_in_plan, stale_lines
    from simclr_hpc.study.spec import StudyError

    stale = stale_in_plan(plan)
    if stale and not rerun_stale:
        raise StudyError(stale_lines(stale, str(path)))
    for item in stale:
        print(f"stale {item.what}: {item.reason}; moved aside to {move_aside(item.path)}")


def _skip_active(backend, plan, force: bool):
    """Wrap ``backend`` so that runs whose job is still pending or running are not handed out again (unless
    ``force``); returns (backend, list that fills with the keys of those runs)."""
    if force:
        return backend, []
    from simclr_hpc.activejobs import SkipActive, active_jobs

    wrapped = SkipActive(backend, active_jobs(plan), plan)
    return wrapped, wrapped.reused


def _only(values: list[str] | None) -> set[str] | None:
    from simclr_hpc.config import STAGES
    from simclr_hpc.study.spec import StudyError

    if not values:
        return None
    bad = [v for v in values if v not in STAGES]
    if bad:
        raise StudyError([f"--only {v}: not a stage; use one of {', '.join(STAGES)}" for v in bad])
    return set(values)


def _backend(executor: str, profile: str | None = None, container: str | None = None, parallelism: int = 0):
    """``inprocess``: call the runner in this process; ``local``/``slurm``: through ``simclr_hpc.launch``."""
    from simclr_hpc.study.engine import InProcessBackend, LaunchBackend

    if executor == "inprocess":
        return InProcessBackend()
    from simclr_hpc.launch import make_request

    if executor == "local":
        parallelism = parallelism or 1
        # Local jobs share this machine's cores: give each its share of threads (unless the user chose already),
        # since oversubscribed BLAS/oneDNN threads make small models many times slower.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallelism)))
    request = make_request(executor=executor, profile=profile, container=container,
                           gpus_per_node=0 if executor == "local" else None)
    return LaunchBackend(request, parallelism=parallelism)


def run_study(path: Path, executor: str = "local", only: set[str] | None = None, report: bool = True,
              parallelism: int = 0, rerun_stale: bool = False, force: bool = False):
    """Build data, run every unfinished run in order, write the report. Returns (plan, engine report, report)."""
    from simclr_hpc.study.engine import prepare_data, run_plan
    from simclr_hpc.study.report import write_report

    plan = _plan(path)
    _stale(plan, path, rerun_stale)
    prepare_data(plan)
    backend, reused = _skip_active(_backend(executor, parallelism=parallelism), plan, force)
    result = run_plan(plan, backend, only=only)
    waited = f", waited for {len(reused)} started earlier" if reused else ""
    print(f"ran {len(result.done) - len(reused)}, skipped {len(result.skipped)} finished{waited}, "
          f"failed {len(result.failed)}, blocked {len(result.blocked)}")
    rep = write_report(plan) if report else None
    return plan, result, rep


@study_app.command("run")
@user_errors
def run_cmd(
    study: StudyArg,
    executor: Annotated[str, typer.Option(help="local (submitit's local executor) or inprocess (this process).")] = "local",
    only: OnlyOpt = None,
    report: Annotated[bool, typer.Option(help="Write the report at the end.")] = True,
    parallelism: Annotated[int, typer.Option(help="Local jobs running at once (0 = one at a time).")] = 0,
    rerun_stale: RerunStaleOpt = False,
    force: ForceOpt = False,
) -> None:
    """Run the study on this machine, in dependency order; finished runs are skipped, failed ones run again."""
    from simclr_hpc.study.spec import StudyError

    if executor not in ("local", "inprocess"):
        raise StudyError(f"--executor {executor}: use local or inprocess (study submit is for Slurm)")
    _, result, rep = run_study(study, executor, _only(only), report, parallelism, rerun_stale, force)
    if rep:
        print(f"report: {rep.path}")
    if result.failed or result.blocked:
        raise typer.Exit(1)


@study_app.command("submit")
@user_errors
def submit_cmd(
    study: StudyArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every job and array; submit nothing.")] = False,
    profile: Annotated[Optional[str], typer.Option(help="Site profile (configs/clusters/NAME.yaml).")] = None,
    container: Annotated[Optional[str], typer.Option(help="Apptainer image (.sif) every task runs in.")] = None,
    parallelism: Annotated[int, typer.Option(help="Array parallelism cap (0 = the profile's or unlimited).")] = 0,
    only: OnlyOpt = None,
    rerun_stale: RerunStaleOpt = False,
    force: ForceOpt = False,
) -> None:
    """Submit the whole study to Slurm at once: arrays chained with afterok; finished runs are skipped, and so are
    runs whose job is still queued or running. Never waits."""
    from simclr_hpc.study.engine import dry_run_lines, prepare_data, run_plan

    plan = _plan(study)
    selected = _only(only)
    if not dry_run:
        _stale(plan, study, rerun_stale)
    if dry_run:
        for line in dry_run_lines(plan, selected):
            print(line)
        _print_sbatch(plan, selected, profile, container, parallelism)
        return
    backend, reused = _skip_active(_backend("slurm", profile, container, parallelism), plan, force)
    prepare_data(plan)
    result = run_plan(plan, backend, only=selected)
    for key, job in result.jobs.items():
        print(f"{key}: job {job}" + (" (queued or running already)" if key in reused else ""))
    active = f", {len(reused)} queued or running (not resubmitted; --force submits them again)" if reused else ""
    print(f"submitted {len(result.submitted) - len(reused)}{active}, skipped {len(result.skipped)} finished")


def _print_sbatch(plan, only, profile, container, parallelism) -> None:
    """The launcher's exact sbatch script of each array (dependencies shown as placeholders: nothing is submitted)."""
    from simclr_hpc.launch import make_request, render_array
    from simclr_hpc.study.walk import arrays, select

    request = make_request(executor="slurm", profile=profile, container=container)
    for array in arrays(plan, select(plan, only).todo):
        for script in render_array(array.stage, [r.cfg for r in array.runs], request, parallelism=parallelism or None):
            print(f"# ---- sbatch script of array {array.name} ({len(array.runs)} runs) ----")
            print(script.rstrip())


@study_app.command("status")
@user_errors
def status_cmd(study: StudyArg) -> None:
    """Where every run of the study stands: done, failed, started (running or killed) or missing."""
    from simclr_hpc.study.aggregate import collect, not_done, summary

    plan = _plan(study)
    rows = collect(plan, refresh_jobs=True)
    by_stage: dict[str, dict[str, int]] = {}
    for row in rows:
        by_stage.setdefault(row.stage, {}).setdefault(row.status, 0)
        by_stage[row.stage][row.status] += 1
    for stage, counts in by_stage.items():
        print(f"{stage:9s} " + "  ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for row in not_done(rows):
        err = f"  ({row.error})" if row.error else ""
        print(f"  {row.status:8s} {row.key}{err}")
    total = summary(rows)
    print(f"total: {len(rows)} runs, " + ", ".join(f"{v} {k}" for k, v in sorted(total.items())))


@study_app.command("report")
@user_errors
def report_cmd(
    study: StudyArg,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (default <root>/<study>/report).")] = None,
    backends: Annotated[Optional[str], typer.Option(
        "--backends", help="Also write the table into these tracking backends, comma-separated (tensorboard, wandb, "
                           "mlflow; \"\" for none). Unset: the backends the study's runs log to.")] = None,
) -> None:
    """Aggregate every result.json into results.csv and write report.md with plots and confidence intervals."""
    import csv

    from simclr_hpc.outputs import check_output_dir
    from simclr_hpc.study.report import write_report
    from simclr_hpc.train.tracking import publish_report, report_backends

    plan = _plan(study)
    check_output_dir(out or plan.study_dir / "report", "--out", files=("report.md", "results.csv"))
    names = report_backends(backends, [run.cfg for run in plan.runs])
    rep = write_report(plan, out)
    print(f"report: {rep.path}")
    _print_headline(rep)
    with open(rep.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    for line in publish_report(names, plan.study.name, Path(plan.study.root), rep.path.parent, rows,
                               [rep.path, rep.csv, *rep.plots]):
        print(line)


def _print_headline(rep) -> None:
    """The report's headline: its verdicts, then every number below a baseline (one ``- `` line each)."""
    for line in rep.headline:
        print(line.replace("**", ""))


def demo_study_path() -> Path:
    """The bundled demo study: ``configs/studies/demo.yaml`` of the checkout (or the package's copy when installed)."""
    import simclr_hpc

    pkg = Path(simclr_hpc.__file__).resolve().parent
    for candidate in (pkg.parent / "configs" / "studies" / "demo.yaml", pkg / "defaults" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    from simclr_hpc.study.spec import StudyError

    raise StudyError(f"the demo study file is missing (looked in {pkg.parent / 'configs/studies'}); reinstall simclr-hpc")


def demo(
    study: Annotated[Optional[Path], typer.Option(help="Study file (default: the bundled configs/studies/demo.yaml).")] = None,
    executor: Annotated[str, typer.Option(
        help="local (submitit's local executor: the same code path as on a cluster, in --parallelism worker "
             "processes) or inprocess (every run in this process, one after another).")] = "local",
    parallelism: Annotated[int, typer.Option(min=1, help="Local jobs running at once (executor local).")] = 2,
) -> None:
    """The embedded default: a whole small study on bundled data, run locally, ending with the report and its findings."""
    if executor not in ("local", "inprocess"):
        from simclr_hpc.study.spec import StudyError

        raise StudyError(f"--executor {quote(executor)}: the demo runs on this machine (local or inprocess); for a "
                         "cluster, `simclr-hpc study submit configs/studies/demo.yaml`")
    start = time.monotonic()
    path = study or demo_study_path()
    print(f"demo: {path}")
    _, result, rep = run_study(path, executor, parallelism=parallelism)
    print(f"demo finished in {time.monotonic() - start:.0f}s")
    print(f"report: {rep.path}")
    _print_headline(rep)
    if result.failed or result.blocked:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``study`` and ``demo`` to the app."""
    app.add_typer(study_app, name="study")
    app.command("demo")(user_errors(demo))
