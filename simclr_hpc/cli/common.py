"""What every command shares: turning user errors into one line per problem and exit code 2."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from simclr_hpc.config import UserError

ConfigOpt = Annotated[Optional[Path], typer.Option("-c", "--config", help="YAML with only what differs from the defaults.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override one field: --set train.steps=200 (repeatable).")]

EXIT_USAGE = 2


def fail(lines: list[str] | str) -> None:
    """Print each problem as one line on stderr and exit with code 2. Nothing after this runs."""
    for line in [lines] if isinstance(lines, str) else lines:
        print(f"error: {line}", file=sys.stderr)
    raise typer.Exit(EXIT_USAGE)


def user_errors(fn: Callable) -> Callable:
    """Decorator for commands: a UserError becomes ``fail(err.lines)``; every other exception keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(err.lines)

    return wrapper
