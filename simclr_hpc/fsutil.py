"""Atomic file writes and file hashing: the bottom layer every writer uses (imports nothing from the package).

A reader (another rank, a study aggregation, a requeued job) sees either the old file or the whole new one, never a
part, and after a crash the new file is on disk once the call returned: the data is written to a temporary file in the
same directory, fsynced, renamed over the target, and the directory is fsynced so the rename itself survives.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class AtomicWriteError(RuntimeError):
    """A file could not be written; the message names the path, and the previous version is unchanged."""


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


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (by any means: ``torch.save``, ``csv``, ...); on
    leaving the block it is fsynced and renamed over ``path``. On an error the temporary file is removed and ``path``
    is unchanged; an OSError becomes an :class:`AtomicWriteError` naming ``path``."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise AtomicWriteError(
            f"could not write {path}: {err.strerror or err}; the previous version is unchanged"
        ) from err
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
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically and durably."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


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
