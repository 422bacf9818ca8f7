"""Atomic file writes, strict JSON and file hashing: the bottom layer every writer uses (imports nothing from the
package).

A reader (another rank, a study aggregation, a requeued job) sees either the old file or the whole new one, never a
part, and after a crash the new file is on disk once the call returned: the data is written to a temporary file in the
same directory, fsynced, renamed over the target, and the directory is fsynced so the rename itself survives.

What an atomic write never does: follow or replace a symbolic link (the temporary file is created with ``O_NOFOLLOW``
and ``O_EXCL``, and a link at the target is refused), replace anything but a regular file (a device node, a FIFO, a
socket or a directory at the target is refused), or leave a partial file behind. A write that fails because the disk
is full is one :class:`AtomicWriteError` naming the path, also where the writer hides ENOSPC (``torch.save`` raises a
RuntimeError): :func:`out_of_space` tells that apart from a bug.

JSON is written strictly (``allow_nan=False``): ``NaN`` and ``Infinity`` are not JSON, and strict readers (``jq``,
browsers, most JSON libraries outside Python) refuse files holding them. A non-finite number is written as ``null``
and its dotted path is listed, with the reason, under ``non_finite`` (:func:`dumps_json`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class AtomicWriteError(RuntimeError):
    """A file could not be written; the message names the path, and the previous version is unchanged. ``reason``:
    why, in a few words (``no space left on device``)."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """A hidden temporary name beside ``path`` that is unique to this process (so two writers never share it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def replace(src: str | Path, dst: str | Path) -> None:
    """Rename ``src`` over ``dst`` (a file, a symlink or, when ``dst`` is absent, a directory) and fsync the parent."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


SPACE_MARGIN = 1 << 20
"""Below this many free bytes a failed write is taken to have failed for lack of space."""

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def not_replaceable(path: str | Path) -> str | None:
    """Why an output must not be written at ``path`` whatever ``--force`` says (a symbolic link, a directory, a device,
    a FIFO, a socket), or None when it is absent or a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None  # absent (a missing or non-directory parent is for the caller's own checks)
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        return f"cannot be examined ({getattr(err, 'strerror', None) or err})"
    if stat.S_ISLNK(mode):
        return "is a symbolic link, which an output never follows or replaces; give the real path or remove the link"
    for test, kind in _KINDS:
        if test(mode):
            return f"is {kind}, not a regular file; an output never replaces one: choose another path"
    return None


def out_of_space(path: str | Path) -> bool:
    """Whether the file system holding ``path`` (or its nearest existing parent) has less than SPACE_MARGIN bytes left
    for us: how a write that failed without an errno is told to have met a full disk."""
    for candidate in (Path(path), *Path(path).parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize < SPACE_MARGIN
    return False


def no_space(path: str | Path, err: BaseException) -> bool:
    """Whether ``err``, raised while writing under ``path``, is a full disk or quota (an errno saying so, or a writer's
    RuntimeError while the file system is out of space)."""
    code = getattr(err, "errno", None)
    hidden = isinstance(err, RuntimeError) and not isinstance(err, AtomicWriteError)  # torch.save's way of saying it
    return code in (errno.ENOSPC, errno.EDQUOT) or (hidden and out_of_space(path))


def write_failed(path: str | Path, err: BaseException) -> AtomicWriteError | None:
    """The one-line error of a write of ``path`` that raised ``err``: an OSError, or a writer's RuntimeError when the
    disk is full (check before removing the partial file, which frees its space). None: a bug, let it through."""
    code = getattr(err, "errno", None)
    full = no_space(path, err)
    if full:
        reason = os.strerror(errno.EDQUOT if code == errno.EDQUOT else errno.ENOSPC)  # the system's own words
    elif isinstance(err, OSError):
        reason = err.strerror or str(err)
    else:
        return None
    fix = "free some space there or choose another place" if full else "choose another place"
    return AtomicWriteError(
        f"could not write {path}: {reason}; the previous version is unchanged and no partial file is left ({fix})",
        reason,
    )


@contextmanager
def writes_under(path: str | Path) -> Iterator[None]:
    """A block that fills the directory ``path`` (its own) through a library, maybe from threads of its own
    (TensorBoard's event writer): an OSError there, in this thread or one of its threads, removes ``path`` (no
    partial file stays) and is one :class:`AtomicWriteError` naming it; a thread's own traceback is held back."""
    import shutil
    import threading

    failed: list[BaseException] = []
    previous = threading.excepthook

    def hold(args) -> None:
        if isinstance(args.exc_value, OSError):
            failed.append(args.exc_value)
        else:
            previous(args)

    threading.excepthook = hold
    try:
        yield
    except OSError as err:
        failed.insert(0, err)
    finally:
        threading.excepthook = previous
    if failed:
        failure = write_failed(path, failed[0])
        shutil.rmtree(path, ignore_errors=True)
        raise failure from failed[0]


def _fresh(tmp: Path) -> None:
    """Create ``tmp`` empty, as our own regular file: never through a link someone placed at its (predictable) name."""
    tmp.unlink(missing_ok=True)  # removes a stale file or link, never what a link points to
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (by any means: ``torch.save``, ``csv``, ...); on
    leaving the block it is fsynced and renamed over ``path``. On an error the temporary file is removed and ``path``
    is unchanged; an OSError, or any error on a full disk, becomes an :class:`AtomicWriteError` naming ``path``. A
    ``path`` that is not a regular file (a link, a device, ...) is refused before anything is written."""
    path = Path(path)
    if why := not_replaceable(path):
        raise AtomicWriteError(f"{path}: {why}")
    tmp = temp_path(path)
    try:
        _fresh(tmp)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if why := not_replaceable(path):  # it may have changed while we wrote
            raise AtomicWriteError(f"{path}: {why}")
        os.replace(tmp, path)
    except Exception as err:
        failure = write_failed(path, err) if not isinstance(err, AtomicWriteError) else None
        tmp.unlink(missing_ok=True)
        if failure is None:
            raise
        raise failure from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = True) -> None:
    """Write ``obj`` as strict JSON (:func:`dumps_json`, with a final newline) to ``path`` atomically and durably."""
    write_text_atomic(path, dumps_json(obj, indent=indent, sort_keys=sort_keys) + "\n")


def finite(obj: Any, path: str = "", reasons: dict | None = None) -> tuple[Any, dict[str, str]]:
    """``obj`` with every non-finite float replaced by None, and {dotted path: "nan"|"inf"|"-inf"} of each one."""
    reasons = {} if reasons is None else reasons
    if isinstance(obj, float) and not math.isfinite(obj):
        reasons[path or "value"] = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return None, reasons
    if isinstance(obj, dict):
        return {k: finite(v, f"{path}.{k}" if path else str(k), reasons)[0] for k, v in obj.items()}, reasons
    if isinstance(obj, (list, tuple)):
        return [finite(v, f"{path}[{i}]", reasons)[0] for i, v in enumerate(obj)], reasons
    return obj, reasons


def dumps_json(obj: Any, **kwargs) -> str:
    """Strict JSON text of ``obj``: non-finite numbers become null, listed under ``non_finite`` (dicts only)."""
    clean, reasons = finite(obj)
    if reasons:
        if not isinstance(clean, dict):
            raise ValueError(f"non-finite value(s) at {', '.join(reasons)} outside a JSON object")
        clean["non_finite"] = {
            key: f"{value}: not representable in JSON, written as null" for key, value in reasons.items()
        }
    return json.dumps(clean, allow_nan=False, **kwargs)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``, read in ``chunk``-byte blocks (shards and checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def pid_alive(pid: int | str) -> bool:
    """The local process ``pid`` exists and is not a zombie (a finished child its parent has not reaped yet)."""
    if not str(pid).isdigit():
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
    except OSError:
        return True


def process_start(pid: int | str) -> float | None:
    """When the local process ``pid`` started (seconds since the epoch, from /proc), or None if it is gone."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def is_process(pid: int | str, started_at: float, command_word: str, slack_s: float = 120.0) -> bool:
    """Whether ``pid`` is still the process that was started at ``started_at`` (within ``slack_s``) running a command
    that mentions ``command_word``: a pid that was reused by another process since fails both. Checked before any
    signal is sent to a pid taken from a file."""
    start = process_start(pid)
    if start is None or abs(start - started_at) > slack_s:
        return False
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return command_word.encode() in f.read()
    except (OSError, ValueError):
        return False
