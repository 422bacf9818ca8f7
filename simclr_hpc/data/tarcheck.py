"""Whether a tar file is whole, from its last blocks alone: shared by ``data verify`` (``shards``) and ``doctor``.

No torch and no webdataset here: ``doctor`` must answer in a second on a login node.
"""

from __future__ import annotations

import tarfile
from pathlib import Path


def end_marker_missing(path: Path) -> str | None:
    """Why ``path`` is not a whole tar, or None when it ends with the end-of-archive marker.

    A whole tar ends with two zero blocks after its last member, then zero padding; a file cut inside that padding is
    still whole, so the zeros must start at a block boundary and run to the end of the file.
    """
    size = path.stat().st_size
    tail = 2 * tarfile.BLOCKSIZE + size % tarfile.BLOCKSIZE
    with open(path, "rb") as f:
        f.seek(max(0, size - tail))
        if size < tail or f.read() != bytes(tail):
            return "no end-of-archive marker: the file is cut short"
    return None
