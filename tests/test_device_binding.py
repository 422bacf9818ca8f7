"""Which GPU a task trains on: ``LOCAL_RANK`` modulo the GPUs it sees, so a site that binds one GPU per task
(``--gpus-per-task=1``, ``--gpu-bind``: each task's CUDA_VISIBLE_DEVICES names its own GPU only) gets ordinal 0 on
every rank instead of an invalid ``cuda:LOCAL_RANK``. The GPUs are simulated through the environment, as Slurm sets
it; ``scripts/gpu_check.sh`` builds both engines on a real GPU with ``CUDA_VISIBLE_DEVICES=0 LOCAL_RANK=3``."""

import pytest
import torch

from simclr_hpc import distributed as D


@pytest.fixture(autouse=True)
def _no_real_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the environment alone says what is visible


def _rank(local_rank: int, visible: str) -> dict:
    """The environment Slurm and our launcher give task ``local_rank`` of a 4-task node (one node)."""
    return {
        "WORLD_SIZE": "4",
        "RANK": str(local_rank),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": "4",
        "CUDA_VISIBLE_DEVICES": visible,
    }


def _index(environ: dict) -> int:
    env = D.DistEnv.from_env(environ)
    return D.gpu_index(env.local_rank, D.visible_gpus(environ))


@pytest.mark.parametrize("visible", ["0", "3", "GPU-6f1c2d3e-0000-0000-0000-000000000000"])
@pytest.mark.parametrize("local_rank", range(4))
def test_a_task_bound_to_one_gpu_uses_ordinal_0_whatever_its_local_rank(visible, local_rank):
    assert _index(_rank(local_rank, visible)) == 0


@pytest.mark.parametrize("local_rank", range(4))
def test_tasks_that_see_every_gpu_of_the_node_take_their_local_rank(local_rank):
    assert _index(_rank(local_rank, "0,1,2,3")) == local_rank


def test_two_gpus_per_task_each_task_takes_one_of_its_own():
    assert [_index(_rank(r, "0,1" if r < 2 else "2,3")) for r in range(4)] == [0, 1, 0, 1]


def test_no_visible_gpu_is_the_cpu_and_an_empty_list_counts_none():
    assert D.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert D.local_device(D.DistEnv.from_env(_rank(3, "0")), {"CUDA_VISIBLE_DEVICES": "0"}).type == "cpu"
    with pytest.raises(ValueError, match="no GPU visible"):
        D.gpu_index(3, 0)
