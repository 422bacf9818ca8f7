"""``--executor local``, ``study run`` and ``demo`` on a GPU machine: the job gets the GPUs this process may use.

submitit's local executor sets a job's CUDA_VISIBLE_DEVICES to ``""`` unless GPUs are asked for, and ``study run``
asks for none, so a study on a GPU machine trained on the CPU without a word (issue 21, item 8). The machine's GPUs
are simulated by this process's CUDA_VISIBLE_DEVICES, which is what the job now inherits; the jobs are real
(submitit's local executor, a process each)."""

from __future__ import annotations

import os

import pytest

from simclr_hpc.launch.environment import local_gpu_setup
from simclr_hpc.launch.jobspec import LaunchRequest, build_job_spec
from simclr_hpc.launch.local_launcher import LocalLauncher


def _visible_in_job() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize(
    "visible",
    ["0,1", "GPU-6f1c2d3e-0000-0000-0000-000000000000", None],
    ids=["two-gpus", "uuid", "unset-means-every-gpu"],
)
def test_a_local_job_sees_the_gpus_of_the_process_that_started_it(tmp_path, monkeypatch, visible):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    request = LaunchRequest(executor="local", gpus_per_node=0, container="none")  # what study run asks for
    spec = build_job_spec("pretrain", request, tmp_path / "runs", "gpus")
    job = LocalLauncher().submitit_executor(spec, tmp_path / "logs").submit(_visible_in_job)
    assert job.result() == visible


def test_the_setup_lines_quote_what_they_pass_on():
    assert local_gpu_setup({}) == ["unset CUDA_VISIBLE_DEVICES"]
    assert local_gpu_setup({"CUDA_VISIBLE_DEVICES": "0,1"}) == ["export CUDA_VISIBLE_DEVICES=0,1"]
    assert local_gpu_setup({"CUDA_VISIBLE_DEVICES": ""}) == ["export CUDA_VISIBLE_DEVICES=''"]
