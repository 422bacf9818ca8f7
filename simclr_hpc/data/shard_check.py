"""The shard files a run will read, checked against ``index.json`` before the run writes anything (its config.yaml):
cheap enough for every start (one ``stat`` and one 512-byte read per shard), so that an index that disagrees with its
tars is one line naming the shard instead of a failure mid-training (or a sample called an "undecodable image").

Each shard must be a regular file inside the shard directory (a FIFO would block the reader; a link may only point
inside the directory). With ``contents`` (``data.on_error=raise``) it must also have the size ``index.json`` recorded
and begin with a regular tar member of the sample ``index.json`` says it holds first, declaring no more bytes than the
file has; under ``data.on_error=skip`` damaged contents are what the reader skips and counts. What needs every byte
read (hashes, every sample's image and label) is ``simclr-hpc data verify``'s. Torch-free.
"""

from __future__ import annotations

import shlex
import tarfile
from pathlib import Path

from simclr_hpc.data.index import DatasetIndex, ShardInfo
from simclr_hpc.data.limits import not_regular
from simclr_hpc.data.sources import DataError


def check_shard_files(index: DatasetIndex, contents: bool = True) -> None:
    """DataError (one line, naming the shard) when a shard of ``index`` is not what ``index.json`` says."""
    root = index.root.resolve()
    for split in index.splits.values():
        for shard, start, stop in split.shard_ranges():
            path = index.root / shard.name
            problem = _problem(path, root, shard, split.keys[start] if stop > start and contents else None, contents)
            if problem:
                raise DataError(
                    f"{path}: {problem}; rebuild the shards, or find the damage with `simclr-hpc data "
                    f"verify {shlex.quote(str(index.root))}`"
                )


def placement_problem(path: Path, root: Path) -> str | None:
    """Why the shard file ``path`` may not be read at all (missing, not a regular file, or a link leading outside the
    shard directory ``root``, given resolved), or None. Every reader of shards asks this before it opens one."""
    return not_regular(path) or link_outside(path, root)


def link_outside(path: Path, root: Path) -> str | None:
    """Why ``path`` leads outside the shard directory ``root`` (given resolved), or None when it stays inside (or
    leads nowhere: a link loop is :func:`not_regular`'s to name)."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        return None
    return None if resolved.is_relative_to(root) else f"is a link to {resolved}, outside the shard directory"


def _problem(path: Path, root: Path, shard: ShardInfo, first_key: str | None, contents: bool) -> str | None:
    if why := placement_problem(path, root):
        return why
    size = path.stat().st_size
    if contents and shard.bytes is not None and size != shard.bytes:
        return f"holds {size} bytes but index.json says {shard.bytes} (changed since it was built)"
    if first_key is None:
        return None
    with open(path, "rb") as f:
        head = f.read(tarfile.BLOCKSIZE)
    try:
        member = tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        return f"not a tar file ({exc or type(exc).__name__})"
    if not member.isreg():
        return f"its first member {member.name[:80]!r} is not a regular file (a link or a directory)"
    if member.name.split(".", 1)[0] != first_key or "/" in member.name:
        return f"begins with member {member.name[:80]!r}, but index.json says its first sample is {first_key}"
    if member.size > size:
        return f"its first member declares {member.size} bytes in a file of {size}"
    return None
