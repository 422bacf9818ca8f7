"""Writing the shards of a :class:`~simclr_hpc.data.shard_plan.BuildPlan`: in parallel, resumable, hashed as written.

``build`` plans (or reloads the plan of an interrupted build), keeps every shard already done, and writes the others
with ``workers`` processes; ``build_range`` writes one Slurm array task's share of a saved plan; ``finish`` writes
``index.json`` once every shard is done. Each shard is written to a partial file (``.<name>.partial-<host>-<pid>``)
through a writer that hashes the bytes as they go out, fsynced, renamed into place, then recorded as done: a shard
file under its own name is always whole. A build never deletes what it did not write: the shards of a failed or
killed build stay for the rerun, and the only files it removes are its own partial files (of processes of this host
that are gone) and its ``_build/`` bookkeeping (at the end, or when a failed build kept no shard). Image files that
are bad from their head or tail never get here: ``image_check`` refuses them before anything is written.

Per image the source file is read in directory order within its shard and checked by its header (``--check header``:
the format's header parses (``headers.read_header``) and the file ends with the format's end marker) or fully decoded
(``--check full``). JPEG files of an ImageFolder are stored as they are when the format is jpg (RGB or grayscale);
others are decoded and encoded (``sources.encode_image``). The tars are written with the standard library's
``tarfile`` headers (no webdataset, so no torch, in a build), read by webdataset's stages like any WebDataset shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import socket
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable, Literal

import numpy as np

from simclr_hpc import fsutil
from simclr_hpc.data.headers import END_MARKERS, cut_short, read_header
from simclr_hpc.data.limits import IMAGE_ERRORS, ImageTooLarge, check_size, not_regular, opened, to_uint8
from simclr_hpc.data.shard_plan import PARTIAL, BuildPlan, PlannedShard, PlannedSplit
from simclr_hpc.data.sources import DataError, Source, bad_image, encode_image

Check = Literal["header", "full"]
READ_THREADS = 8
"""Files each writer process reads at once (threads: reading releases the GIL). One read at a time leaves a parallel
file system, or a disk, mostly waiting."""
MAX_PROBLEMS = 20
"""Problem lines reported per build (the rest are counted)."""


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte USTAR header of a regular file with our fixed metadata: the bytes ``tarfile.TarInfo.tobuf`` gives
    (tested against it), built from a template at a tenth of its cost (it was most of a shard's writing time)."""
    raw = name.encode()
    if len(raw) > 100:
        raise ValueError(f"tar member name {name!r} is longer than 100 bytes")
    header = bytearray(_HEADER_TEMPLATE)
    header[0 : len(raw)] = raw
    header[124:136] = b"%011o\0" % size
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _template() -> bytes:
    info = tarfile.TarInfo("")
    info.size, info.mtime, info.mode, info.uname, info.gname = 0, 0, 0o644, "", ""
    header = bytearray(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))
    header[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    return bytes(header)


_HEADER_TEMPLATE = _template()


class HashedTar:
    """A plain tar written member by member through a sha256 (no read-back for the hash) with fixed metadata (mtime
    0, uid/gid 0, no user or group names, mode 0644), so the same samples give the same bytes. In WebDataset layout:
    a sample's members are ``<key>.cls`` then ``<key>.<image ext>``."""

    def __init__(self, out: BinaryIO):
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def _write(self, data: bytes) -> None:
        self.sha256.update(data)
        self.size += len(data)
        self.out.write(data)

    def add(self, name: str, data: bytes) -> None:
        self._write(ustar_header(name, len(data)))
        self._write(data)
        if len(data) % tarfile.BLOCKSIZE:
            self._write(bytes(-len(data) % tarfile.BLOCKSIZE))

    def close(self) -> None:
        """The end-of-archive marker (two zero blocks), padded to a whole record as tarfile does."""
        end = self.size + 2 * tarfile.BLOCKSIZE
        self._write(bytes(2 * tarfile.BLOCKSIZE + -end % tarfile.RECORDSIZE))


def file_payload(path: Path, image_format: str, channels: int, check: Check) -> tuple[bytes, str, tuple[int, int]]:
    """``(bytes, extension, (height, width))`` to store for an image file: the file itself when its format is the
    shards' and its colours need no conversion (grayscale included: readers expand it), else the decoded image encoded
    as ``image_format`` (CMYK and palette images, 16-bit PNGs, other formats)."""
    if why := not_regular(path):  # a FIFO would block the build forever
        raise bad_image(path, OSError(why))
    data = path.read_bytes()
    header = read_header(data)
    if header is not None:
        try:
            check_size(header.width, header.height)  # a decompression bomb is refused from its header
        except ImageTooLarge as exc:
            raise bad_image(path, exc) from None
    modes = ("RGB", "L") if channels == 3 else ("L",)
    as_is = header is not None and header.mode in modes and {"JPEG": "jpg", "PNG": "png"}[header.format] == image_format
    if as_is and check == "header":
        if cut_short(header, data):
            raise bad_image(path, OSError("no end-of-image marker: the file is cut short"))
        return data, image_format, (header.height, header.width)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            opened(img)
            if img.format in END_MARKERS and END_MARKERS[img.format] not in data[-64:]:
                raise OSError("no end-of-image marker: the file is cut short")
            img.load()
            hw = (img.height, img.width)
            if as_is:
                return data, image_format, hw
            # grey stays grey in colour shards (readers expand it); 16-bit and float images scaled, not clipped
            pixels = to_uint8(img, None if channels == 3 else True)
    except IMAGE_ERRORS as exc:  # PIL: UnidentifiedImageError, truncated file, bad header, a bomb
        raise bad_image(path, exc) from None
    return encode_image(pixels.reshape(*hw, -1), image_format), image_format, hw


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
    order = images.read_order(shard.start, shard.stop)
    with ThreadPoolExecutor(READ_THREADS) as readers:  # reads overlap: a file system's latency per file is hidden
        payloads = dict(zip(order, readers.map(images.payload, order)))
    final = plan.root / shard.name
    partial = plan.root / f".{shard.name}{PARTIAL}{socket.gethostname()}-{os.getpid()}"
    labels = images.split.labels
    try:
        with open(partial, "wb") as f:
            tar = HashedTar(f)
            for pos in range(shard.start, shard.stop):
                data, ext, _ = payloads[pos]
                key = f"{shard.split}-{pos:07d}"
                tar.add(f"{key}.cls", str(int(labels[pos])).encode())
                tar.add(f"{key}.{ext}", data)
            tar.close()
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name says the shard is whole
    except OSError as err:  # a full disk: one line naming the shard, and no partial file left
        partial.unlink(missing_ok=True)
        raise fsutil.write_failed(final, err) from err
    os.replace(partial, final)
    sizes = sorted({hw for _, _, hw in payloads.values()})
    colour = any((h := read_header(data)) is None or h.mode != "L" for data, _, _ in payloads.values())
    record = {
        "plan": plan.digest,
        "name": shard.name,
        "count": shard.stop - shard.start,
        "sha256": tar.sha256.hexdigest(),
        "bytes": tar.size,
        "sizes": [list(s) for s in sizes[:2]],
        "colour": colour,
    }
    # Not fsynced (nor the renames): a record or a rename lost in a crash only makes the rerun write the shard again;
    # four fsyncs per shard were most of a build's time on a local disk.
    done = plan.done_path(shard)
    tmp = done.with_name(f".{done.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, done)
    return record


_JOB: dict = {}
"""What the forked workers of ``run_pending`` share (the plan, the images per split): set before the pool forks."""


def _write_task(shard: PlannedShard) -> tuple[str, str | None]:
    try:
        write_shard(_JOB["plan"], shard, _JOB["images"][shard.split])
    except DataError as err:
        return shard.name, err.lines[0]
    return shard.name, None


def run_pending(
    plan: BuildPlan,
    shards: list[PlannedShard],
    source: Source | None,
    check: Check,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> None:
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
        raise DataError(
            problems[:MAX_PROBLEMS]
            + more
            + [
                f"{plan.root}: {len(problems)} shard(s) not written; the others are kept: fix or replace the files named "
                "above and run the same command again (it writes only what is missing)"
            ]
        )


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
