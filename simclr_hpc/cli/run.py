"""``simclr-hpc run STAGE`` and ``simclr-hpc config show|validate``."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc.cli.common import ConfigOpt, SetOpt, user_errors
from simclr_hpc.config import STAGES, ConfigError, dump_config, load_config
from simclr_hpc.fsutil import dumps_json
from simclr_hpc.train.task_table import stage_help


def _stage(stage: str) -> str:
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r} is not one of: {', '.join(STAGES)}")
    return stage


def run(
    stage: Annotated[str, typer.Argument(help=stage_help())],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run one stage in this process (inside a Slurm task, or locally). Resumes from the latest checkpoint."""
    _run(stage, config, set_ or [])


@user_errors
def _run(stage: str, config: Path | None, overrides: list[str]) -> None:
    from simclr_hpc.train import preempt

    # First thing: a time-limit signal during start-up (imports, data setup) must not kill the task (USR2's default
    # action); the flag it sets stops the loop after its first step, with a checkpoint.
    preempt.install()
    cfg = load_config(config, overrides, stage=_stage(stage))
    from simclr_hpc.fsutil import AtomicWriteError
    from simclr_hpc.launch.slurm import job_active
    from simclr_hpc.train.checkpoint import CheckpointError
    from simclr_hpc.train.loop import NonFiniteLoss
    from simclr_hpc.train.runner import run_stage

    try:
        result = run_stage(stage, cfg, job_alive=job_active)
    except (NonFiniteLoss, CheckpointError, AtomicWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(1) from None
    except preempt.Preempted as stop:
        from simclr_hpc.launch.task import EXIT_REQUEUE, request_requeue

        # Under Slurm, rank 0 asks the batch script to requeue the job; anywhere else, run the same command again.
        if os.environ.get("SLURM_JOB_ID") and os.environ.get("RANK", "0") == "0":
            request_requeue(str(stop))
        print(f"simclr-hpc: {stop}; the same command resumes from there", file=sys.stderr)
        raise typer.Exit(EXIT_REQUEUE) from None
    skipped = result.get("skipped_samples") or 0
    if skipped:
        seen = skipped + result.get("steps", 0) * result.get("global_batch", 0)
        print(
            f"warning: {skipped} corrupt sample reads were skipped (data.on_error=skip), {100 * skipped / seen:.1f}% "
            f"of all reads; `simclr-hpc data verify {shlex.quote(cfg.data.shards)}` names them",
            file=sys.stderr,
        )
    print(dumps_json({"run_dir": result["run_dir"], "metrics": result["metrics"]}))


config_app = typer.Typer(
    help="Show a run configuration, or validate run configs, site profiles and studies.", no_args_is_help=True
)


@config_app.command("show")
@user_errors
def config_show(
    stage: Annotated[Optional[str], typer.Argument(help=f"Resolve with this stage's recipe: {stage_help()}.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    docs: Annotated[
        bool, typer.Option("--docs/--no-docs", help="Each field's documentation as a comment above it.")
    ] = True,
) -> None:
    """Print the fully resolved config (defaults + the stage's recipe + file + overrides) as YAML, each field with its
    documentation."""
    from simclr_hpc.cli.config_files import commented_yaml

    cfg = load_config(config, set_ or [], stage=_stage(stage) if stage else None)
    print(commented_yaml(cfg) if docs else dump_config(cfg), end="")


@config_app.command("validate")
@user_errors
def config_validate(
    files: Annotated[Optional[list[Path]], typer.Argument(help="YAML files (none: every file under configs/).")] = None,
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="auto (told by each file's keys), run (a stage config), profile (configs/clusters) or study."
        ),
    ] = "auto",
) -> None:
    """Validate run configs, site profiles and study files; one line per error naming file and field. Exit 2 if any
    is invalid."""
    from simclr_hpc.cli.config_files import shipped_files, validate_files

    files = files or shipped_files()
    counts = validate_files(files, kind)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"{len(files)} config file(s) valid" + (f" ({kinds})" if kinds else ""))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.add_typer(config_app, name="config")
