"""``simclr-hpc run STAGE`` and ``simclr-hpc config show|validate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc.cli.common import ConfigOpt, SetOpt, user_errors
from simclr_hpc.config import STAGES, ConfigError, dump_config, load_config



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
    cfg = load_config(config, overrides)
    _stage(stage)
    from simclr_hpc.fsutil import AtomicWriteError
    from simclr_hpc.train.loop import NonFiniteLoss
    from simclr_hpc.train.checkpoint import CheckpointError
    from simclr_hpc.train.runner import run_stage

    try:
        result = run_stage(stage, cfg)
    except (NonFiniteLoss, CheckpointError, AtomicWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(1)
    print(json.dumps({"run_dir": result["run_dir"], "metrics": result["metrics"]}))


config_app = typer.Typer(help="Show a run configuration, or validate run configs, site profiles and studies.",
                         no_args_is_help=True)


@config_app.command("show")
@user_errors
def config_show(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    docs: Annotated[bool, typer.Option("--docs/--no-docs", help="Each field's documentation as a comment above it.")] = True,
) -> None:
    """Print the fully resolved config (defaults + file + overrides) as YAML, each field with its documentation."""
    from simclr_hpc.cli.config_files import commented_yaml

    cfg = load_config(config, set_ or [])
    print(commented_yaml(cfg) if docs else dump_config(cfg), end="")


@config_app.command("validate")
@user_errors
def config_validate(
    files: Annotated[Optional[list[Path]], typer.Argument(help="YAML files (none: every file under configs/).")] = None,
    kind: Annotated[str, typer.Option(
        "--kind", help="auto (told by each file's keys), run (a stage config), profile (configs/clusters) or study.")
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
