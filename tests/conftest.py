"""Shared test setup: the Slurm cluster plugin, marker bookkeeping for CI, and the GPU skip."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.slurm_cluster"]

# Tests run on 2 shared cores: keep torch from oversubscribing them (each test process gets its own threads).
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    import torch

    has_cuda = torch.cuda.is_available()
    for item in items:
        for marker in ("slurm", "dist", "gpu", "slow"):
            if item.get_closest_marker(marker):
                # .ci/run reads these from the JUnit XML to fail CI when a must-run test was skipped.
                item.user_properties.append(("marker", marker))
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA; run scripts/gpu_check.sh on a GPU machine"))
