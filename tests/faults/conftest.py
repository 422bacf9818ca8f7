"""Fixtures shared by the fault tests."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_overrides


@pytest.fixture(scope="session")
def finished_pretrain(tmp_path_factory, tiny_shards):
    """(run root, --set overrides, result) of a finished 2-step pretrain run ``t/pretrain/r`` on ``tiny_shards``."""
    from simclr_hpc.config import load_config
    from simclr_hpc.train.runner import run_stage

    root = tmp_path_factory.mktemp("finished") / "runs"
    overrides = tiny_overrides(tiny_shards, root, steps=2) + ["run.name=r"]
    result = run_stage("pretrain", load_config(None, overrides))
    return root, overrides, result
