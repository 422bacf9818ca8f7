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
        return ":".join(["shapes", *fields, *_SHAPES_DEFAULTS[len(fields) :]])
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


def stale_in_plan(plan) -> list[Stale]:
    """Every stale dataset and finished run of a study plan (``simclr_hpc.study.plan.Plan``), datasets first.

    A run is stale when its own result is (another config, replaced shards), when its dataset's shards are stale, or
    when a run it depends on is stale (an encoder pretrained on the old data makes every downstream result old too).
    """
    out: list[Stale] = []
    stale_dirs: set[Path] = set()
    for ds in plan.datasets:
        reason = stale_shards(ds.shards, ds.source)
        if reason:
            out.append(Stale(f"dataset {ds.name}", Path(ds.shards), reason))
            stale_dirs.add(Path(ds.shards).absolute())
    stale_keys: dict[str, str] = {}
    for run in plan.runs:  # plan order: every run comes after the runs it depends on
        if not run.result_path.is_file():
            continue
        try:
            result = read_json(run.result_path, "result.json")
        except FileError:
            continue  # unreadable: not done, run again anyway
        reason = next((f"depends on {dep}, which is stale" for dep in run.depends_on if dep in stale_keys), None)
        if reason is None and Path(run.cfg.data.shards).absolute() in stale_dirs:
            reason = "its dataset's shards are stale"
        if reason is None and isinstance(result, dict):
            reason = stale_result(result, run.cfg.hash(run.stage), Path(run.cfg.data.shards))
        if reason:
            stale_keys[run.key] = reason
            out.append(Stale(f"run {run.key}", run.run_dir, reason))
    return out


def stale_lines(stale: list[Stale], where: str) -> list[str]:
    """The refusal: one line per stale dataset, one line for all stale runs (there may be thousands)."""
    lines = [
        f"{where}: {s.what} in {s.path}: {s.reason}; rerun with --rerun-stale to rebuild it (the old shards are "
        "kept aside as *.stale-<time>)"
        for s in stale
        if s.what.startswith("dataset")
    ]
    runs = [s for s in stale if s.what.startswith("run")]
    if runs:
        first = runs[0].what.removeprefix("run ")
        lines.append(
            f"{where}: {len(runs)} finished run(s) no longer match the study (first: {first}: "
            f"{runs[0].reason}); rerun with --rerun-stale to run them again (old results are kept aside)"
        )
    return lines
