"""What produced a study's shards and results, and whether that still matches what the study file asks for.

Shards are keyed by their source spec (``index.json`` records it); a result by the config hash and the shards' content
hash it records (``config_hash``, ``data_hash`` in ``result.json``). A study whose dataset source changed under the same
name, or whose run settings changed under the same run name, must not be answered with the old shards and results:
they are *stale*. Stale things are refused, or, when the user asks (``--rerun-stale``), moved aside (never deleted:
``<name>.stale-<UTC time>``) so that they are built and run again.

No torch here; the study engine and ``cli/study.py`` call it with plain paths and hashes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from simclr_hpc.readers import FileError, read_json

# Defaults of ``shapes[:K[:N_PER_CLASS[:SIZE[:SEED]]]]`` (simclr_hpc.data.sources.open_shapes): "shapes:4" and
# "shapes:4:500:32:0" are the same dataset.
_SHAPES_DEFAULTS = ("10", "500", "32", "0")


def canonical_source(spec: str) -> str:
    """A source spec with defaults filled in and trailing slashes dropped, so equal datasets compare equal."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "shapes":
        fields = rest.split(":") if rest else []
        return ":".join(["shapes", *fields, *_SHAPES_DEFAULTS[len(fields):]])
    return f"{kind}:{rest.rstrip('/')}" if rest else kind


def index_doc(shards: Path) -> dict | None:
    """``index.json`` of a shard directory, or None when there is none (not built yet) or it cannot be read."""
    try:
        doc = read_json(Path(shards) / "index.json", "shard index")
    except FileError:
        return None
    return doc if isinstance(doc, dict) else None


def stale_shards(shards: Path, source: str) -> str | None:
    """Why the shards in ``shards`` are not the study's ``source`` (built from another spec), or None."""
    doc = index_doc(shards)
    if doc is None or "source" not in doc:
        return None
    if canonical_source(str(doc["source"])) != canonical_source(source):
        return f"built from {doc['source']!r} but the study now says {source!r}"
    return None


def stale_result(result: dict, config_hash: str, shards: Path) -> str | None:
    """Why ``result`` does not answer a run of ``config_hash`` on the current ``shards``, or None."""
    if result.get("config_hash") != config_hash:
        return f"written by another config (hash {result.get('config_hash')} != {config_hash})"
    data_hash = result.get("data_hash")
    doc = index_doc(shards)
    if data_hash and doc is not None and doc.get("content_hash") != data_hash:
        return "trained on shards that have since been replaced"
    return None


@dataclass
class Stale:
    """A stale dataset (shards) or run (result): what it is, where it lives, and why."""

    what: str
    path: Path
    reason: str


def move_aside(path: Path, stamp: str | None = None) -> Path:
    """Rename ``path`` to ``<path>.stale-<UTC time>`` (nothing is deleted); returns the new path."""
    stamp = stamp or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.stale-{stamp}")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.stale-{stamp}-{n}"), n + 1
    path.rename(target)
    return target
