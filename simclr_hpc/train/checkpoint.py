"""Atomic checkpoints.

A checkpoint is a directory ``checkpoints/step-NNNNNNNN/`` holding ``state.pt`` (tensors and plain values only, so it
loads with ``weights_only=True``), ``meta.json`` (step, sha256 of state.pt, config hash) and an empty ``COMPLETE``
marker. It is written under a temporary name and renamed into place, and ``latest`` (a symlink) is then swapped
atomically, so a job killed at any instant leaves ``latest`` pointing at a whole checkpoint. A checkpoint whose hash
does not match is refused and the previous whole one is used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from simclr_hpc import fsutil
from simclr_hpc.fsutil import sha256_file
from simclr_hpc.readers import FileError, read_json
from simclr_hpc.rundir import LATEST

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "meta.json"
COMPLETE_FILE = "COMPLETE"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or none could be loaded; the message names the path and what to do."""


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(root: Path, step: int, state: dict, meta: dict, keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` under ``root``; point ``latest`` at it; keep the newest ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        torch.save(state, tmp / STATE_FILE)
        with open(tmp / STATE_FILE, "rb+") as f:
            os.fsync(f.fileno())
        meta = {**meta, "step": step, "sha256": sha256_file(tmp / STATE_FILE)}
        (tmp / META_FILE).write_text(fsutil.dumps_json(meta, indent=2, sort_keys=True))
        (tmp / COMPLETE_FILE).write_text("")
        fsutil.fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        fsutil.replace(tmp, final)
        link_tmp = fsutil.temp_path(root / LATEST)
        link_tmp.unlink(missing_ok=True)
        os.symlink(final.name, link_tmp)
        fsutil.replace(link_tmp, root / LATEST)
    except Exception as err:
        # torch.save hides a full disk behind a RuntimeError: write_failed tells it from a bug (before the partial
        # files are removed, which frees their space).
        failure = fsutil.write_failed(final, err)
        shutil.rmtree(tmp, ignore_errors=True)
        if failure is None:
            raise
        previous = latest_whole(root)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {final}: {failure.reason}; {kept}") from err
    _prune(root, keep)
    return final


def _step_dirs(root: Path) -> list[Path]:
    """Checkpoint directories under ``root``, newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: p.name, reverse=True)


def _prune(root: Path, keep: int) -> None:
    whole = [p for p in _step_dirs(root) if (p / COMPLETE_FILE).exists()]
    target = (root / LATEST).resolve() if (root / LATEST).exists() else None
    for old in whole[keep:]:
        if old.resolve() != target:
            shutil.rmtree(old, ignore_errors=True)


def verify_checkpoint(path: Path) -> str | None:
    """None if ``path`` is a whole checkpoint whose state matches its recorded hash, else the reason it is not."""
    if not (path / COMPLETE_FILE).exists():
        return "incomplete (no COMPLETE marker)"
    try:
        meta = read_json(path / META_FILE, "checkpoint meta.json")
    except FileError:
        return "meta.json missing or unreadable"
    if not isinstance(meta, dict):
        return "meta.json is not a JSON object"
    if not (path / STATE_FILE).is_file():
        return "state.pt missing"
    if sha256_file(path / STATE_FILE) != meta.get("sha256"):
        return "state.pt does not match the sha256 in meta.json (corrupt or modified)"
    return None


def latest_whole(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` that passes :func:`verify_checkpoint` (``latest`` first), or None."""
    root = Path(root)
    candidates = []
    link = root / LATEST
    if link.exists():
        candidates.append(link.resolve())
    candidates += [p.resolve() for p in _step_dirs(root) if p.resolve() not in candidates]
    for path in candidates:
        reason = verify_checkpoint(path)
        if reason is None:
            return path
        log.warning("skipping checkpoint %s: %s", path, reason)
    return None


def load_state(path: Path) -> dict:
    """Load ``state.pt`` of a verified checkpoint with ``weights_only=True``: a pickle that runs code is refused."""
    path = Path(path)
    reason = verify_checkpoint(path)
    if reason is not None:
        raise CheckpointError(f"refusing checkpoint {path}: {reason}")
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError/RuntimeError for disallowed globals
        raise CheckpointError(
            f"refusing checkpoint {path}: it holds Python objects other than tensors and plain values "
            f"(weights_only load failed: {str(err).splitlines()[0]})"
        ) from err


def read_meta(path: Path) -> dict:
    return json.loads((Path(path) / META_FILE).read_text())
