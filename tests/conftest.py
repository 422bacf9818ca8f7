"""Shared test setup: the Slurm cluster plugin, marker bookkeeping for CI, and the GPU skip."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.slurm_cluster"]

# Tests run on 2 shared cores: keep torch from oversubscribing them (each test process gets its own threads).
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _restore_environment():
    """Put os.environ back after every test: a launcher test that exports RANK/WORLD_SIZE in-process must not make
    every later run_stage in this process (and every subprocess it starts) believe it is rank 0 of 8."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


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


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """A 4-class generated dataset, 16 px, 40 images per class: enough for every stage to run end to end in seconds."""
    from simclr_hpc.data.shards import write_shards

    out = tmp_path_factory.mktemp("data") / "shapes4"
    write_shards("shapes:4:40:16", out, val_fraction=0.0, shard_size=64, seed=0)
    return out


def tiny_overrides(shards, root, study="t", steps=6):
    """--set list for a seconds-long run of any stage on ``tiny_shards``."""
    return [
        f"data.shards={shards}",
        f"run.root={root}",
        f"run.study={study}",
        "data.image_size=16",
        "data.num_workers=0",
        "model.width=0.125",
        "model.backbone=resnet18",
        "train.global_batch=16",
        f"train.steps={steps}",
        "train.ckpt_every_steps=2",
        "train.log_every_steps=1",
        "train.eval_batch_per_device=64",
        "optim.warmup_steps=1",
    ]
