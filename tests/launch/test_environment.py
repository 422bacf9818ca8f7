"""The torch distributed environment a task exports from Slurm's variables."""

from __future__ import annotations

import os

import pytest

from simclr_hpc.launch.environment import dist_vars, export_torch_env, first_host, master_port


def test_master_port_is_derived_from_the_job_id_and_stays_below_the_ephemeral_range():
    ports = {master_port(j) for j in range(0, 50_000, 7)}
    assert min(ports) >= 20000 and max(ports) <= 29999
    assert master_port("4242") == master_port(4242) == 24242  # requeued job: same id, same port
    assert master_port("123_4") == master_port(123)  # an array id string never crashes


@pytest.mark.parametrize(
    "nodelist,first", [("node[1-2]", "node1"), ("gpu07,gpu08", "gpu07"), ("a[09-11],b1", "a09"), ("single", "single")]
)
def test_first_host_of_a_slurm_nodelist(nodelist, first):
    assert first_host(nodelist) == first


def _slurm_task_env(monkeypatch, **extra):
    for key in list(os.environ):
        if key.startswith(("SLURM_", "SUBMITIT_")) or key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(key, raising=False)
    base = dict(
        SUBMITIT_EXECUTOR="slurm",
        SLURM_JOB_ID="31337",
        SLURM_NTASKS="8",
        SLURM_JOB_NUM_NODES="2",
        SLURM_NODEID="1",
        SLURM_PROCID="6",
        SLURM_LOCALID="2",
        SLURM_JOB_NODELIST="gpu[07-08]",
        SLURM_TASKS_PER_NODE="4(x2)",
        CUDA_VISIBLE_DEVICES="0,1,2,3",
        MASTER_PORT="1",
        RANK="99",
    )
    base.update(extra)
    for key, value in base.items():
        monkeypatch.setenv(key, value)


def test_task_of_a_two_node_four_gpu_job_gets_torchrun_variables(monkeypatch):
    _slurm_task_env(monkeypatch)
    found = export_torch_env()
    assert found.as_env() == {
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": "21337",
        "RANK": "6",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "2",
        "LOCAL_WORLD_SIZE": "4",
        "NODE_RANK": "1",
    }
    # stale values are overwritten; every GPU of the node stays visible so that cuda:LOCAL_RANK is this task's GPU
    assert os.environ["RANK"] == "6" and os.environ["MASTER_PORT"] == "21337"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_uneven_tasks_per_node_use_this_nodes_count(monkeypatch):
    _slurm_task_env(
        monkeypatch, SLURM_NTASKS="5", SLURM_TASKS_PER_NODE="3,2", SLURM_NODEID="1", SLURM_PROCID="4", SLURM_LOCALID="1"
    )
    assert dist_vars().local_world_size == 2
