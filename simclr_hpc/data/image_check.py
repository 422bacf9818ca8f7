"""Every image file a shard build will write, looked at before anything is written: bad input is refused whole.

Most bad files are bad from their first or last bytes: not an image at all, an empty file, a file cut short while
copied, a header claiming a decompression bomb, a FIFO. ``check_images`` finds those for every file of the shards
still to write by reading each file's head and tail only (a few KiB, in threads: on a parallel file system the cost
is latency, not bandwidth), the same checks ``--check header`` makes while writing. One line per bad file is the
answer, and OUT_DIR is left as it was (not even created).

What only a full decode finds (``--check full``: damage inside the compressed data) is found while the shards are
written; a shard with such a file then fails alone and the others are kept for the rerun (``shard_writer``), as a
killed build's are: a million-file build does not start over for one file found late.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from simclr_hpc.data.headers import END_MARKERS, read_header
from simclr_hpc.data.limits import IMAGE_ERRORS, check_size, not_regular, opened
from simclr_hpc.data.shard_plan import BuildPlan, PlannedShard
from simclr_hpc.data.sources import DataError, bad_image

HEAD = 64 * 1024
"""Bytes read from a file's start: a JPEG's header (its EXIF and ICC segments before the frame) fits; a file whose
header goes on longer is opened by PIL, which reads what it needs."""
TAIL = 64
"""Bytes read from a file's end, where its format's end marker must be (``headers.cut_short``)."""
THREADS = 4
"""Threads checking files at once: enough to keep a disk or a file system's latency hidden; more only contend for
the GIL (measured on 20,000 cold JPEGs here: 4 threads 1.5 s, 16 threads 2.2 s)."""
BATCH = 256
"""Files one thread checks per task: a future per file cost more than the checks themselves (1.5 s of 2 s warm)."""
MAX_LINES = 20
"""Bad files named (the rest are counted)."""


def file_problem(path: str | Path) -> str | None:
    """The one-line refusal of image file ``path`` (``sources.bad_image``'s), or None when its head and tail look
    like a whole image of a size we accept."""
    try:
        if why := not_regular(path):  # a FIFO would block the reader forever
            raise OSError(why)
        with open(path, "rb") as f:
            head = f.read(HEAD)
            size = os.fstat(f.fileno()).st_size
            if size > len(head):
                f.seek(max(size - TAIL, 0))
                tail = f.read(TAIL)
            else:
                tail = head[-TAIL:]
        header = read_header(head)
        if header is None:  # another format, or a header longer than HEAD: PIL reads it (lazily, no decoding)
            from PIL import Image

            with Image.open(path) as img:
                fmt = opened(img).format
        else:
            check_size(header.width, header.height)
            fmt = header.format
        if fmt in END_MARKERS and END_MARKERS[fmt] not in tail:
            raise OSError("no end-of-image marker: the file is cut short")
    except IMAGE_ERRORS as exc:  # PIL: UnidentifiedImageError, a bad header, a bomb; ours: a FIFO, a cut file
        return bad_image(Path(path), exc).lines[0]
    return None


def _problems(files: list[str]) -> list[str]:
    return [p for f in files if (p := file_problem(f))]


def check_images(plan: BuildPlan, shards: list[PlannedShard]) -> None:
    """One DataError (a line per bad file, at most ``MAX_LINES``) when an image file of ``shards`` is bad from its
    head or tail; nothing when the source is not files (arrays are checked as they are encoded)."""
    files = sorted(
        {f for s in shards if (names := plan.splits[s.split].files) is not None for f in names[s.start : s.stop]}
    )  # path order: directory order on the file system
    batches = (files[start : start + BATCH] for start in range(0, len(files), BATCH))
    with ThreadPoolExecutor(THREADS) as pool:
        problems = [p for found in pool.map(_problems, batches) for p in found]
    if problems:
        more = (
            [f"... and {len(problems) - MAX_LINES} more unreadable image(s) in {plan.source}"]
            if len(problems) > MAX_LINES
            else []
        )
        raise DataError(problems[:MAX_LINES] + more)
