"""Fixtures of the data tests: small generated shard directories and a way to damage one shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_hpc.data.shards import write_shards
from tests.faults.helpers import rewrite_shard  # noqa: F401  (re-exported for the data tests)


@pytest.fixture(scope="module")
def shapes_shards(tmp_path_factory) -> Path:
    """shapes with 4 classes, 30 train images per class (12 of them to val), 20 test per class, 25 samples per shard."""
    out = tmp_path_factory.mktemp("shards") / "shapes4"
    write_shards("shapes:4:30:32", out, val_fraction=0.1, shard_size=25, seed=0)
    return out


def truncate_file(path: Path, keep_fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
