"""Fixtures of the data tests: small generated shard directories and a way to damage one shard."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Callable

import pytest

from simclr_hpc.data.shards import write_shards


@pytest.fixture(scope="module")
def shapes_shards(tmp_path_factory) -> Path:
    """shapes with 4 classes, 30 train images per class (12 of them to val), 20 test per class, 25 samples per shard."""
    out = tmp_path_factory.mktemp("shards") / "shapes4"
    write_shards("shapes:4:30:32", out, val_fraction=0.1, shard_size=25, seed=0)
    return out


def rewrite_shard(path: Path, edit: Callable[[str, bytes], bytes | None]) -> None:
    """Rewrite the tar at ``path`` member by member; ``edit(name, data)`` returns new bytes, or None to drop the member."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            data = edit(name, data)
            if data is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def truncate_file(path: Path, keep_fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
