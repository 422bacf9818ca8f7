"""``simclr-hpc study run|submit|status|report STUDY.yaml`` and ``simclr-hpc demo``: a whole study as one pipeline.

Each command parses its options and makes one call into ``simclr_hpc.study`` (``pipeline``, ``publish``), which
checks everything before it prints or writes anything; the command prints what comes back and sets the exit code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc import launch
from simclr_hpc.cli.common import user_errors

study_app = typer.Typer(
    help="A whole study (pretrain -> finetune/distill arrays -> transfer array -> report).", no_args_is_help=True
)

StudyArg = Annotated[Path, typer.Argument(help="Study file, e.g. configs/studies/demo.yaml.")]
OnlyOpt = Annotated[Optional[list[str]], typer.Option("--only", help="Only runs of this stage (repeatable).")]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force", help="Also hand out runs whose job is still queued or running (by default they are left to it)."
    ),
]
RerunStaleOpt = Annotated[
    bool,
    typer.Option(
        "--rerun-stale",
        help="Rebuild shards and rerun finished runs that no longer match the study file (changed dataset "
        "source or run settings); the old ones are moved aside as *.stale-<time>, never deleted.",
    ),
]
ExecutorOpt = Annotated[str, typer.Option(help=launch.executor_help(blocking=True))]


def _options(**fields):
    from simclr_hpc.study.walk import StudyOptions

    fields["only"] = tuple(fields.get("only") or ())
    return StudyOptions(**{k: v for k, v in fields.items() if v is not None})


@study_app.command("run")
@user_errors
def run_cmd(
    study: StudyArg,
    executor: ExecutorOpt = launch.THIS_MACHINE,
    only: OnlyOpt = None,
    report: Annotated[bool, typer.Option(help="Write the report at the end.")] = True,
    parallelism: Annotated[int, typer.Option(help="Jobs running at once on this machine (0 = one at a time).")] = 0,
    rerun_stale: RerunStaleOpt = False,
    force: ForceOpt = False,
) -> None:
    """Run the study on this machine, in dependency order; finished runs are skipped, failed ones run again."""
    from simclr_hpc.study.pipeline import run_study

    _, outcome, rep = run_study(
        study,
        _options(executor=executor, only=only, parallelism=parallelism, rerun_stale=rerun_stale, force=force),
        report=report,
    )
    if rep:
        print(f"report: {rep.path}")
    if outcome.failed or outcome.blocked:
        raise typer.Exit(1)


@study_app.command("submit")
@user_errors
def submit_cmd(
    study: StudyArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every job and array; submit nothing.")] = False,
    profile: Annotated[Optional[str], typer.Option(help="Site profile (configs/clusters/NAME.yaml).")] = None,
    container: Annotated[Optional[str], typer.Option(help="Apptainer image (.sif) every task runs in.")] = None,
    parallelism: Annotated[int, typer.Option(help="Array parallelism cap (0 = the profile's).")] = 0,
    only: OnlyOpt = None,
    rerun_stale: RerunStaleOpt = False,
    force: ForceOpt = False,
) -> None:
    """Submit the whole study to Slurm at once: each array waits (afterany) for the arrays it depends on, and a run
    whose input did not finish fails at once with the reason; finished runs are skipped, and so are runs whose job is
    still queued or running. Never waits. Run it again to resubmit what did not finish."""
    from simclr_hpc.study.pipeline import dry_run as study_dry_run
    from simclr_hpc.study.pipeline import submit_study

    options = _options(
        profile=profile, container=container, parallelism=parallelism, only=only, rerun_stale=rerun_stale, force=force
    )
    if dry_run:
        print("\n".join(study_dry_run(study, options)))
        return
    submit_study(study, options)


@study_app.command("status")
@user_errors
def status_cmd(study: StudyArg) -> None:
    """Where every run of the study stands: done, queued, running, failed (with why), blocked, started or missing."""
    from simclr_hpc.study.publish import status_lines

    print("\n".join(status_lines(study)))


@study_app.command("report")
@user_errors
def report_cmd(
    study: StudyArg,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (default <root>/<study>/report).")] = None,
    backends: Annotated[
        Optional[str],
        typer.Option(
            "--backends",
            help="Also write the table into these tracking backends, comma-separated (tensorboard, wandb, "
            'mlflow; "" for none). Unset: the backends the study\'s runs log to.',
        ),
    ] = None,
) -> None:
    """Aggregate every result.json into results.csv and write report.md with plots and confidence intervals."""
    from simclr_hpc.study.publish import headline, report_study

    rep, lines = report_study(study, out, backends)
    print("\n".join([f"report: {rep.path}", *headline(rep), *lines]))


def demo(
    study: Annotated[
        Optional[Path], typer.Option(help="Study file (default: the bundled configs/studies/demo.yaml).")
    ] = None,
    executor: ExecutorOpt = launch.THIS_MACHINE,
    parallelism: Annotated[int, typer.Option(min=1, help="Jobs running at once on this machine.")] = 2,
) -> None:
    """The embedded default: a whole small study on bundled data, run locally, ending with the report and its findings."""
    from simclr_hpc.study.pipeline import demo_study_path, run_study
    from simclr_hpc.study.publish import headline

    start = time.monotonic()
    path = study or demo_study_path()
    print(f"demo: {path}")
    _, outcome, rep = run_study(path, _options(executor=executor, parallelism=parallelism))
    print(f"demo finished in {time.monotonic() - start:.0f}s")
    print("\n".join([f"report: {rep.path}", *headline(rep)]))
    if outcome.failed or outcome.blocked:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``study`` and ``demo`` to the app."""
    app.add_typer(study_app, name="study")
    app.command("demo")(user_errors(demo))
