"""The directories a run reads and writes: a shard directory (its ``index.json`` read with ``json``, not through
``simclr_hpc.data``, and every shard it lists whole) and the run root (writable)."""

from __future__ import annotations

import shlex
import tempfile
from collections import deque
from pathlib import Path

from simclr_hpc.data.tarcheck import end_marker_missing
from simclr_hpc.doctor.check import Check
from simclr_hpc.readers import FileError, read_json


def _shard_names(index: object) -> list[str]:
    """Every ``*.tar`` file name mentioned anywhere in ``index.json``, in order, once each.

    Walks the whole document rather than one schema, so this check does not depend on how ``data/shards.py`` lays out
    splits; shard names are the only strings there that end in ``.tar``. Per-sample keys make the document large
    (millions of strings for ImageNet), hence a deque.
    """
    names: dict[str, None] = {}
    queue = deque([index])
    while queue:
        node = queue.popleft()
        if isinstance(node, dict):
            queue.extend(node.values())
        elif isinstance(node, list):
            queue.extend(node)
        elif isinstance(node, str) and node.endswith(".tar"):
            names[node] = None
    return list(names)


def check_data_root(root: Path) -> list[Check]:
    """A shard directory: it exists, has a readable ``index.json``, and every shard it lists exists and is non-empty."""
    name = "data"
    make = f"make it with `simclr-hpc data shards SOURCE {shlex.quote(str(root))}` or pass the right --data-root"
    if not root.is_dir():
        return [Check(name, "fail", f"data root {root}: no such directory", make)]
    index_path = root / "index.json"
    if not index_path.is_file():
        return [Check(name, "fail", f"data root {root}: no index.json", make)]
    try:
        index = read_json(index_path, "shard index")
    except FileError as err:
        return [Check(name, "fail", f"data root {root}: index.json unreadable ({err.lines[0]})", make)]
    shards = _shard_names(index)
    if not shards:
        return [Check(name, "fail", f"data root {root}: index.json lists no shards", make)]
    missing, empty, cut, total_bytes = [], [], [], 0
    for shard in shards:
        path = root / shard
        if not path.is_file():
            missing.append(shard)
        elif path.stat().st_size == 0:
            empty.append(shard)
        else:
            total_bytes += path.stat().st_size
            if end_marker_missing(path):  # a copy or download that stopped early: reading it would fail mid-run
                cut.append(shard)
    problems = [
        f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for names, what in ((missing, "missing"), (empty, "empty"), (cut, "cut short"))
        if names
    ]
    if problems:
        return [
            Check(
                name,
                "fail",
                f"data root {root}: of {len(shards)} shards, " + "; ".join(problems),
                f"copy the shards again or rebuild them; `simclr-hpc data verify {shlex.quote(str(root))}` checks every sample",
            )
        ]
    return [Check(name, "ok", f"data root {root}: {len(shards)} shards, {total_bytes / 2**20:.1f} MiB")]


def check_run_root(root: Path) -> list[Check]:
    """The run directory can be written: a temporary file is created in it, or in its nearest existing parent."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = "choose a writable run root on a shared filesystem (run.root in the config, or --run-root)"
    if not existing.is_dir():
        return [Check("run root", "fail", f"{root}: {existing} is not a directory", fix)]
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".simclr-hpc-doctor-"):
            pass
    except OSError as err:
        return [Check("run root", "fail", f"{root}: cannot write in {existing} ({err.strerror})", fix)]
    where = "writable" if existing == root else f"will be created (parent {existing.resolve()} is writable)"
    return [Check("run root", "ok", f"{root.resolve()} {where}")]
