"""``simclr-hpc doctor``: GPUs, NCCL, Slurm, Apptainer, shards and the run directory, one line each with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _print_report(checks) -> None:
    """A rich table on a terminal; otherwise one plain line per check (Slurm logs, pipes, tests)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if console.is_terminal:
        table = Table(show_header=True, header_style="bold")
        for column in ("status", "check", "found", "fix"):
            table.add_column(column, overflow="fold")
        for check in checks:
            table.add_row(f"[{STYLE[check.status]}]{check.status}[/]", check.name, check.detail, check.fix)
        console.print(table)
    else:
        for check in checks:
            print(
                f"{check.status:<4}  {check.name:<12}  {check.detail}" + (f"  -> fix: {check.fix}" if check.fix else "")
            )
    counts = {status: sum(check.status == status for check in checks) for status in STYLE}
    print(f"doctor: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")


def doctor(
    offline: Annotated[
        bool, typer.Option("--offline", help="Skip everything that asks the Slurm controller (sinfo, sacct).")
    ] = False,
    data_root: Annotated[
        list[Path] | None,
        typer.Option("--data-root", help="Shard directory to check (index.json and every shard it lists). Repeatable."),
    ] = None,
    run_root: Annotated[
        Path, typer.Option("--run-root", help="Run directory that must be writable (run.root).")
    ] = Path("runs"),
    image: Annotated[
        Path | None,
        typer.Option("--image", envvar="SIMCLR_IMAGE", help="Apptainer image (.sif) that jobs will run in."),
    ] = None,
) -> None:
    """What is ready and what is not: Python and packages, GPUs, NCCL, Slurm, Apptainer, shards, run directory.

    Each line is ok, warn (works without it, with the fix) or fail (a run will trip over it). Exits 1 if any line fails.
    """
    from simclr_hpc import doctor as checks_lib

    checks = checks_lib.run_checks(offline=offline, data_roots=data_root, run_root=run_root, image=image)
    _print_report(checks)
    raise typer.Exit(checks_lib.exit_code(checks))


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to the app."""
    app.command("doctor")(doctor)
