"""Writing the shards of a :class:`~simclr_hpc.data.shard_plan.BuildPlan`: in parallel, resumable, hashed as written.

``build`` plans (or reloads the plan of an interrupted build), keeps every shard already done, and writes the others
with ``workers`` processes; ``build_range`` writes one Slurm array task's share of a saved plan; ``finish`` writes
``index.json`` once every shard is done. Each shard is written to a partial file (``.<name>.partial-<host>-<pid>``)
through a writer that hashes the bytes as they go out, fsynced, renamed into place, then recorded as done: a shard
file under its own name is always whole. A build never deletes what it did not write: the shards of a failed or
killed build stay for the rerun, and the only files it removes are its own partial files (of processes of this host
that are gone) and, at the end, its ``_build/`` bookkeeping.

Per image the source file is read in directory order within its shard and checked by its header (``--check header``:
the format's header parses and the file ends with the format's end marker) or fully decoded (``--check full``).
JPEG files of an ImageFolder are stored as they are when the format is jpg (RGB or grayscale); others are decoded and
encoded (``sources.encode_image``).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import socket
from pathlib import Path
from typing import BinaryIO, Callable, Literal

import numpy as np

from simclr_hpc import fsutil
from simclr_hpc.data.shard_plan import PARTIAL, BuildPlan, PlannedShard, PlannedSplit
from simclr_hpc.data.sources import DataError, Source, bad_image, encode_image

Check = Literal["header", "full"]
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
"""What a whole file of each format ends with (allowing a few trailing bytes): a file cut short does not."""
MAX_PROBLEMS = 20
"""Problem lines reported per build (the rest are counted)."""


class _HashingFile:
    """A file object that writes through to ``out`` and hashes every byte on the way (no read-back for the sha256)."""

    def __init__(self, out: BinaryIO):
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _tar_writer(out) -> object:
    """A TarWriter whose output depends only on the samples written (no clock, user or host in the headers)."""
    import webdataset as wds

    # encoder=False: samples arrive as bytes already (images are encoded by us, with fixed PNG/JPEG settings).
    return wds.TarWriter(out, user="", group="", mode=0o644, mtime=0, encoder=False)


def file_payload(path: Path, image_format: str, channels: int, check: Check) -> tuple[bytes, str, tuple[int, int]]:
    """``(bytes, extension, (height, width))`` to store for an image file: the file itself when its format is the
    shards' and its colours need no conversion, else the decoded image encoded as ``image_format``."""
    from PIL import Image

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, mode, hw = img.format, img.mode, (img.height, img.width)
            marker = END_MARKERS.get(fmt)
            if marker is not None and marker not in data[-64:]:
                raise OSError("no end-of-image marker: the file is cut short")
            # Stored as they are: grayscale too (readers expand it), not CMYK or palette images (converted to RGB).
            modes = ("RGB", "L") if channels == 3 else ("L",)
            as_is = {"JPEG": "jpg", "PNG": "png"}.get(fmt) == image_format and mode in modes
            if as_is and check == "header":
                return data, image_format, hw
            img.load()
            if as_is:
                return data, image_format, hw
            pixels = np.asarray(img.convert("RGB" if channels == 3 else "L"))
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError, truncated file, bad header
        raise bad_image(path, exc) from None
    return encode_image(pixels.reshape(*hw, channels), image_format), image_format, hw


def array_payload(image: np.ndarray, image_format: str, channels: int) -> tuple[bytes, str, tuple[int, int]]:
    """The same for an image of an array source (uint8 HWC): encoded, with its channels made the shards'."""
    if image.shape[2] != channels:
        image = np.repeat(image, 3, axis=2) if channels == 3 else image[..., :1]
    return encode_image(image, image_format), image_format, image.shape[:2]


class _Images:
    """The payloads of one planned split: from its files, or from the opened source's arrays."""

    def __init__(self, plan: BuildPlan, split: PlannedSplit, source: Source | None, check: Check):
        self.plan, self.split, self.check = plan, split, check
        self.array = None if split.files is not None else source.splits[split.origin]

    def read_order(self, start: int, stop: int) -> list[int]:
        """Positions ``start:stop`` in the order to read them: a file source's in directory (path) order."""
        if self.split.files is None:
            return list(range(start, stop))
        return sorted(range(start, stop), key=self.split.files.__getitem__)

    def payload(self, pos: int) -> tuple[bytes, str, tuple[int, int]]:
        plan = self.plan
        if self.array is None:
            return file_payload(Path(self.split.files[pos]), plan.image_format, plan.channels, self.check)
        return array_payload(self.array.image(int(self.split.positions[pos])), plan.image_format, plan.channels)


def write_shard(plan: BuildPlan, shard: PlannedShard, images: _Images) -> dict:
    """Write one shard (partial file, hashed as written, fsynced, renamed), then its done record; returns the record."""
    payloads = {pos: images.payload(pos) for pos in images.read_order(shard.start, shard.stop)}
    final = plan.root / shard.name
    partial = plan.root / f".{shard.name}{PARTIAL}{socket.gethostname()}-{os.getpid()}"
    labels = images.split.labels
    with open(partial, "wb") as f:
        hashed = _HashingFile(f)
        with _tar_writer(hashed) as tar:
            for pos in range(shard.start, shard.stop):
                data, ext, _ = payloads[pos]
                tar.write({"__key__": f"{shard.split}-{pos:07d}", ext: data, "cls": str(int(labels[pos])).encode()})
        f.flush()
        os.fsync(f.fileno())
    fsutil.replace(partial, final)
    sizes = sorted({hw for _, _, hw in payloads.values()})
    record = {"plan": plan.digest, "name": shard.name, "count": shard.stop - shard.start,
              "sha256": hashed.sha256.hexdigest(), "bytes": hashed.size, "sizes": [list(s) for s in sizes[:2]]}
    fsutil.write_json_atomic(plan.done_path(shard), record)
    return record


_JOB: dict = {}
"""What the forked workers of ``run_pending`` share (the plan, the images per split): set before the pool forks."""


def _write_task(shard: PlannedShard) -> tuple[str, str | None]:
    try:
        write_shard(_JOB["plan"], shard, _JOB["images"][shard.split])
    except DataError as err:
        return shard.name, err.lines[0]
    return shard.name, None


def run_pending(plan: BuildPlan, shards: list[PlannedShard], source: Source | None, check: Check, workers: int,
                progress: Callable[[int, int], None] | None = None) -> None:
    """Write ``shards`` with ``workers`` processes (1: in this process). A shard with a bad image fails alone: the
    others are written, and one DataError then names every bad file (at most ``MAX_PROBLEMS`` of them)."""
    _remove_own_partials(plan.root)
    if not shards:
        return
    splits = {s.split for s in shards}
    _JOB.update(plan=plan, images={name: _Images(plan, plan.splits[name], source, check) for name in splits})
    problems: list[str] = []
    try:
        if workers <= 1 or len(shards) <= 1:
            results = map(_write_task, shards)
            for done, (_, problem) in enumerate(results, start=1):
                problems += [problem] if problem else []
                if progress:
                    progress(done, len(shards))
        else:
            # fork: the workers share the opened source (arrays, file lists) without pickling it.
            pool = multiprocessing.get_context("fork").Pool(min(workers, len(shards)), initializer=_default_signals)
            try:
                for done, (_, problem) in enumerate(pool.imap_unordered(_write_task, shards), start=1):
                    problems += [problem] if problem else []
                    if progress:
                        progress(done, len(shards))
                pool.close()
            finally:
                pool.terminate()  # SIGTERM: after close() the workers have ended; after an error they must
                pool.join()
    finally:
        _JOB.clear()
    if problems:
        more = [f"... and {len(problems) - MAX_PROBLEMS} more bad image(s)"] if len(problems) > MAX_PROBLEMS else []
        raise DataError(problems[:MAX_PROBLEMS] + more + [
            f"{plan.root}: {len(problems)} shard(s) not written; the others are kept: fix or replace the files named "
            "above and run the same command again (it writes only what is missing)"])


def _default_signals() -> None:
    """Pool workers die on SIGTERM (the pool's terminate) even when forked from a process that handles it (a submitit
    job logs and ignores it, so its workers would never end)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends the pool


def _remove_own_partials(root: Path) -> None:
    """Remove partial shard files that this tool's processes on this host left when they died (never another's)."""
    host = socket.gethostname()
    for path in root.glob(f".*{PARTIAL}*"):
        writer = path.name.rsplit(PARTIAL, 1)[1]
        who, _, pid = writer.rpartition("-")
        if who == host and pid.isdigit() and not fsutil.pid_alive(int(pid)):
            path.unlink(missing_ok=True)
