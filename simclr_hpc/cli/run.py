"""``simclr-hpc run STAGE`` and ``simclr-hpc config show|validate``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc.cli.common import user_errors
from simclr_hpc.config import STAGES, ConfigError, dump_config, load_config

ConfigOpt = Annotated[Optional[Path], typer.Option("-c", "--config", help="YAML with only what differs from the defaults.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override one field: --set train.steps=200 (repeatable).")]


def _stage(stage: str) -> str:
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r} is not one of: {', '.join(STAGES)}")
    return stage


def run(
    stage: Annotated[str, typer.Argument(help="pretrain | finetune | distill | transfer")],
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
    cfg = load_config(config, overrides)
    _stage(stage)
    from simclr_hpc.train.loop import NonFiniteLoss
    from simclr_hpc.train.checkpoint import CheckpointError
    from simclr_hpc.train.runner import run_stage

    try:
        result = run_stage(stage, cfg)
    except (NonFiniteLoss, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(1)
    except preempt.Preempted as stop:
        from simclr_hpc.launch.task import EXIT_REQUEUE
        from simclr_hpc.launch.requeue import request_requeue

        # Under Slurm, rank 0 asks the batch script to requeue the job; anywhere else, run the same command again.
        if os.environ.get("SLURM_JOB_ID") and os.environ.get("RANK", "0") == "0":
            request_requeue(str(stop))
        print(f"simclr-hpc: {stop}; the same command resumes from there", file=sys.stderr)
        raise typer.Exit(EXIT_REQUEUE)
    print(json.dumps({"run_dir": result["run_dir"], "metrics": result["metrics"]}))


config_app = typer.Typer(help="Show or validate a run configuration.", no_args_is_help=True)


@config_app.command("show")
@user_errors
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved config (defaults + file + overrides) as YAML."""
    print(dump_config(load_config(config, set_ or [])), end="")


@config_app.command("validate")
@user_errors
def config_validate(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Config files (default: every YAML under configs/ stages).")] = None,
) -> None:
    """Validate config files; one line per error naming file and dotted field. Exit 2 if any is invalid."""
    if not files:
        files = sorted(p for stage in STAGES for p in Path("configs", stage).glob("*.yaml"))
    errors: list[str] = []
    for path in files:
        try:
            load_config(path)
        except ConfigError as err:
            errors.extend(err.lines)
    if errors:
        raise ConfigError(errors)
    print(f"{len(files)} config file(s) valid")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.add_typer(config_app, name="config")
