"""Output paths a user names (``run.root``, ``data shards OUT_DIR``, ``study report --out``, ``sweep --manifest``,
``export --out``, ``data inspect``'s contact sheet), checked before anything is written: a directory must be (or
become) a writable directory, a file must not be a directory, must not replace an existing file unless asked
(``--force``), and its parent must already exist: nothing creates directories the user did not name. Whatever
``--force`` says, an output is never a symbolic link (it is not followed) or a special file (a device, a FIFO, a
socket: never replaced), and a path holding a NUL byte is refused. Each problem is one UserError line naming the path
and the fix; ``fsutil.atomic_path`` enforces the same at the moment of writing.

No torch here.
"""

from __future__ import annotations

import os
from pathlib import Path

from simclr_hpc.fsutil import not_replaceable
from simclr_hpc.readers import UserError, quote


class OutputError(UserError):
    """An output path that cannot or must not be written."""


def _nearest_existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _no_nul(path: str | Path, what: str) -> Path:
    if "\0" in str(path):
        raise OutputError(f"{what} {quote(str(path))}: holds a NUL byte, which no path can; fix the name")
    return Path(path).expanduser()


def check_output_dir(path: str | Path, what: str, files: tuple[str, ...] = ()) -> Path:
    """``path`` is a writable directory, or can be created as one (its nearest existing ancestor is a writable dir);
    none of the ``files`` it will write there is a directory, a link or a special file."""
    path = _no_nul(path, what)
    for name in files:
        if (path / name).is_dir() and not (path / name).is_symlink():
            raise OutputError(
                f"{what} {path}: {path / name} is a directory, so it cannot be written; remove it or "
                "choose another directory"
            )
        if why := not_replaceable(path / name):
            raise OutputError(f"{what} {path}: {path / name} {why}")
    base = _nearest_existing(path.absolute())
    if base.is_symlink() and not base.exists():
        raise OutputError(f"{what} {path}: {base} is a dangling symbolic link; fix or remove it")
    if not base.is_dir():
        where = "" if base == path.absolute() else f" ({base} is in its way)"
        raise OutputError(f"{what} {path}: is a file, not a directory{where}; choose a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: {base} is not writable by you; choose a directory you can write")
    return path


def make_dir(path: str | Path, what: str) -> Path:
    """``mkdir -p path`` after :func:`check_output_dir`; a file system that still refuses is one OutputError line."""
    path = check_output_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"{what} {path}: cannot create it ({err.strerror or err}); choose a directory you can write"
        ) from None
    return path


def check_output_file(path: str | Path, what: str, force: bool = False) -> Path:
    """``path`` may be written as a file: not a directory, not an existing file unless ``force``, parent exists."""
    path = _no_nul(path, what)
    if path.is_dir() and not path.is_symlink():
        raise OutputError(f"{what} {path}: is a directory; give a file name")
    if why := not_replaceable(path):
        raise OutputError(f"{what} {path}: {why}")
    if path.exists() and not force:
        raise OutputError(f"{what} {path}: already exists; choose another name, or add --force to replace it")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise OutputError(
            f"{what} {path}: directory {parent} does not exist; create it first (nothing is created for you)"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"{what} {path}: not writable by you; choose another path")
    return path
