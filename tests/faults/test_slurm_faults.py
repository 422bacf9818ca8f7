"""Faults on the real local Slurm cluster (slurm/testing: node1, node2), with the REAL training runner.

* A pretrain job requeued (``scontrol requeue``) and then preempted (``scancel --signal=USR2``) mid-run ends with model
  parameters bitwise equal to the same config run uninterrupted in one process.
* A 2-node job loses one node's task (SIGKILL to the rank-1 process): the job ends instead of hanging, and is requeued and
  resumed from its last checkpoint to completion.
* Both ranks of a 2-node job aborted (SIGABRT), as NCCL's watchdog does: the batch script requeues the job, which resumes.

The runner is ``tests.faults.slow_runner:run_stage``: the real one, pausing after each periodic checkpoint so the test
has a window to act in (the pause changes no number).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from simclr_hpc import launch
from simclr_hpc.config import load_config
from simclr_hpc.launch import LaunchRequest, submit_stage
from simclr_hpc.launch import slurm as sl
from simclr_hpc.train import checkpoint as ckpt
from tests.faults.helpers import REPO, cli
from tests.launch.helpers import wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TARGET = "tests.faults.slow_runner:run_stage"


@pytest.fixture(autouse=True)
def _job_env(monkeypatch):
    # sbatch exports the submitting environment: the job imports this checkout and pauses after each checkpoint.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("FAULTS_PAUSE_AFTER_CKPT_S", "6")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from simclr_hpc.data.shards import write_shards

    base = tmp_path_factory.mktemp("faults-slurm")
    write_shards("shapes:4:40:16", base / "shapes4", val_fraction=0.0, shard_size=64, seed=0)
    config = base / "tiny.yaml"
    config.write_text(
        f"run: {{study: faults, name: r}}\n"
        f"data: {{shards: {base}/shapes4, image_size: 16, num_workers: 0}}\n"
        "model: {backbone: resnet18, width: 0.125, proj_dim: 16}\n"
        "train: {steps: 8, global_batch: 16, ckpt_every_steps: 2, log_every_steps: 1, eval_batch_per_device: 64,"
        " collective_timeout_s: 20}\n"
        "optim: {warmup_steps: 1}\n"
    )
    return config, base


def _latest_step(run_dir: Path) -> int:
    latest = ckpt.latest_whole(run_dir / "checkpoints")
    return int(ckpt.load_state(latest)["step"]) if latest else 0


def _final_model(run_dir: Path) -> dict:
    state = ckpt.load_state(ckpt.latest_whole(run_dir / "checkpoints"))
    assert state["step"] == 8
    return state["model"]


def _reference(config: Path, root: Path) -> Path:
    """The same config, uninterrupted, in one fresh process (same thread count as the job: 1)."""
    proc = cli(
        "run",
        "pretrain",
        "-c",
        str(config),
        "--set",
        f"run.root={root}",
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "faults/pretrain/r"


def _restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", job_id, "-o"], capture_output=True, text=True).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return int(fields.get("Restarts", "0"))


def test_requeue_then_usr2_preemption_end_bitwise_equal_to_an_uninterrupted_run(slurm_cluster, tiny):
    config, base = tiny
    cfg = load_config(config, [f"run.root={base}/slurm-runs"])
    rec = submit_stage("pretrain", cfg, LaunchRequest(profile="local", gpus_per_node=0), target=TARGET)
    run_dir = Path(rec.run_dir)
    wait_until(lambda: _latest_step(run_dir) >= 2, 120, "the step-2 checkpoint", poll_s=0.5)
    assert _latest_step(run_dir) == 2  # inside the pause after step 2: interrupt here
    subprocess.run(["scontrol", "requeue", rec.job_id], check=True)
    wait_until(
        lambda: _restarts(rec.job_id) >= 1 and _latest_step(run_dir) >= 4,
        180,
        "the requeued job's step-4 checkpoint",
        poll_s=0.5,
    )
    assert _latest_step(run_dir) == 4
    subprocess.run(["scancel", "--signal=USR2", rec.job_id], check=True)
    assert launch.wait(rec, poll_s=1.0, timeout_s=300) == "COMPLETED"
    assert _restarts(rec.job_id) >= 2 or sl.job_state(rec.job_id) == "COMPLETED"
    logs = Path(rec.stdout).read_text() + Path(rec.stderr).read_text()
    # USR2 came in the pause after the step-4 checkpoint: the loop finished step 5, saved it and asked for the requeue.
    assert "DUE TO JOB REQUEUE" in logs and "preemption signal: checkpoint of step 5 written" in logs, logs[-3000:]
    assert logs.count("resuming ") >= 2, logs[-3000:]  # both restarts resumed from a checkpoint, not from scratch
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))

    ours = _final_model(run_dir)
    ref = _final_model(_reference(config, base / "ref-runs"))
    assert ours.keys() == ref.keys()
    differing = [k for k in ref if not torch.equal(ours[k], ref[k])]
    assert not differing, differing


def _task_pid(job_id: str, procid: int) -> int | None:
    """PID of the job's task ``procid`` (the Python process srun started), found through /proc: the test nodes share
    this machine's PID namespace (each slurmd has only its own network and UTS namespace)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
            cmd = (proc / "cmdline").read_text()
        except OSError:
            continue
        if (
            env.get("SLURM_JOB_ID") == job_id
            and env.get("SLURM_PROCID") == str(procid)
            and "submitit.core._submit" in cmd
            and "srun" not in cmd.split("\0")[0]
        ):
            return int(proc.name)
    return None


@pytest.fixture(scope="module")
def node_death(slurm_cluster, tiny):
    """A 2-node pretrain whose rank-1 task (on node2) is SIGKILLed in the pause after its step-2 checkpoint."""
    config, base = tiny
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(REPO))
    mp.setenv("FAULTS_PAUSE_AFTER_CKPT_S", "6")
    try:
        cfg = load_config(config, [f"run.root={base}/node-death", "run.name=two"])
        rec = submit_stage("pretrain", cfg, LaunchRequest(profile="local", nodes=2, gpus_per_node=1), target=TARGET)
    finally:
        mp.undo()
    run_dir = Path(rec.run_dir)
    wait_until(lambda: _latest_step(run_dir) >= 2, 180, "the 2-node job's step-2 checkpoint", poll_s=0.5)
    pid = wait_until(lambda: _task_pid(rec.job_id, 1), 10, "the rank-1 task's pid")
    os.kill(pid, 9)
    killed_at = time.monotonic()
    # The job must leave RUNNING (end, or be requeued) instead of hanging in a collective.
    ended = None
    deadline = killed_at + 20 + 40  # collective_timeout_s + slack (slurmctld polls every few s; srun grace 7 s)
    while time.monotonic() < deadline:
        state = sl.job_state(rec.job_id)
        if state != "RUNNING" or _restarts(rec.job_id) >= 1:
            ended = time.monotonic() - killed_at
            break
        time.sleep(0.5)
    return {"rec": rec, "run_dir": run_dir, "ended_after_s": ended, "state_after": sl.job_state(rec.job_id)}


def test_killed_rank_ends_the_two_node_job_within_the_collective_timeout(node_death):
    assert node_death["ended_after_s"] is not None, f"job still RUNNING 60 s after rank 1 died: {node_death}"
    assert node_death["ended_after_s"] < 60


def test_job_that_lost_a_node_is_requeued_and_resumes_from_its_last_checkpoint(node_death):
    rec, run_dir = node_death["rec"], node_death["run_dir"]
    final = launch.wait(rec, poll_s=1.0, timeout_s=300)
    logs = Path(rec.stderr).read_text()
    assert final == "COMPLETED", (final, logs[-3000:])
    assert "resuming " in logs and "from step-00000002" in logs, logs[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 8


def test_ranks_aborted_like_nccls_watchdog_does_make_the_job_requeue_and_resume(slurm_cluster, tiny):
    """Under NCCL a lost rank raises nothing in the others: each one's watchdog aborts its process (SIGABRT) once
    its collective times out, so no Python code is left to ask for a requeue. Both ranks of a 2-node job are aborted
    in the pause after the step-2 checkpoint (the watchdog's end, without the wait): the batch script sees srun end
    with 128 + SIGABRT, requeues the job, and it resumes from that checkpoint to completion (issue 21, item 4)."""
    config, base = tiny
    cfg = load_config(config, [f"run.root={base}/aborted", "run.name=abort"])
    rec = submit_stage("pretrain", cfg, LaunchRequest(profile="local", nodes=2, gpus_per_node=1), target=TARGET)
    run_dir = Path(rec.run_dir)
    wait_until(lambda: _latest_step(run_dir) >= 2, 180, "the 2-node job's step-2 checkpoint", poll_s=0.5)
    pids = [wait_until(lambda r=r: _task_pid(rec.job_id, r), 10, f"the rank-{r} task's pid") for r in (1, 0)]
    for pid in pids:
        os.kill(pid, signal.SIGABRT)
    final = launch.wait(rec, poll_s=1.0, timeout_s=300)
    logs = Path(rec.stderr).read_text()
    assert final == "COMPLETED", (final, logs[-3000:])
    assert _restarts(rec.job_id) >= 1 and "a task died from signal 6" in logs, logs[-3000:]
    assert "resuming " in logs and "from step-00000002" in logs, logs[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 8
