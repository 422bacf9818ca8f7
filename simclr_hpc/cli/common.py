"""What every command shares: turning user errors into one line per problem and exit code 2."""

from __future__ import annotations

import errno
import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from simclr_hpc.config import UserError
from simclr_hpc.fsutil import AtomicWriteError
from simclr_hpc.readers import quote

WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""OSErrors that say the place being written cannot take it, whichever writer met them: one line, never a traceback."""
PATH_ERRNOS = (errno.ENAMETOOLONG, errno.ELOOP)
"""OSErrors that say a path the user gave cannot be a path (too long, a loop of links): bad input, exit 2."""

ConfigOpt = Annotated[
    Optional[Path], typer.Option("-c", "--config", help="YAML with only what differs from the defaults.")
]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override one field: --set train.steps=200 (repeatable).")
]

EXIT_USAGE = 2
EXIT_FAILED = 1


MAX_LINE = 600
"""An error line longer than this is cut in its middle (the field it names comes first, the fix last): a value of
thousands of characters pasted into a field is never quoted back whole."""


def tame(line: str) -> str:
    """``line`` fit for a terminal: control characters escaped (none reaches it from a user's input), at most
    MAX_LINE characters."""
    line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line)
    if len(line) > MAX_LINE:
        line = f"{line[: MAX_LINE // 2]} ...({len(line) - MAX_LINE + 100} characters cut)... {line[-(MAX_LINE // 2 - 100) :]}"
    return line


def fail(lines: list[str] | str, code: int = EXIT_USAGE) -> None:
    """Print each problem as one line on stderr (:func:`tame`d) and exit with ``code`` (2: bad input, nothing was
    written). Nothing after this runs."""
    for line in [lines] if isinstance(lines, str) else lines:
        print(f"error: {tame(line)}", file=sys.stderr)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Decorator for commands: a UserError becomes ``fail(err.lines)`` (exit 2: nothing was written); a write that
    failed (a full disk, a read-only place: ``fsutil.AtomicWriteError``, or an OSError saying so) is one line naming
    the path with exit 1; every other exception keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(err.lines)
        except AtomicWriteError as err:
            fail(str(err), EXIT_FAILED)
        except OSError as err:
            where = f" {quote(str(err.filename), 200)}" if err.filename else ""
            if err.errno in PATH_ERRNOS:
                fail(f"path{where}: {err.strerror}; fix the path")
            if err.errno not in WRITE_ERRNOS:
                raise
            fail(f"could not write{where}: {err.strerror}; free some space there or choose another place", EXIT_FAILED)

    return wrapper
