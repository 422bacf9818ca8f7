"""The launcher's requeue-on-lost-peer decision, without Slurm: which errors count as a lost rank, and when the job
requeues itself (a stand-in ``scontrol`` on PATH records the call). The real thing runs in test_slurm_faults.py."""

from __future__ import annotations

import os
import pickle
import stat

import pytest

from simclr_hpc.launch.task import StageJob, lost_peer, requeue_after_lost_peer

LOST = [
    RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [10.77.0.12]:55981"),
    RuntimeError("[pair.cc:598] Connection reset by peer"),
    RuntimeError("Timed out waiting 20000ms for recv operation to complete"),
    type("DistBackendError", (RuntimeError,), {})("NCCL error"),
]
NOT_LOST = [ValueError("config.yaml: bad"), RuntimeError("loss is nan at step 3"), KeyError("model")]


@pytest.mark.parametrize("exc", LOST, ids=[f"lost{i}" for i in range(len(LOST))])
def test_errors_of_a_vanished_peer_are_recognised(exc):
    assert lost_peer(exc)
    try:
        raise ValueError("wrapped") from exc
    except ValueError as outer:
        assert lost_peer(outer)


@pytest.mark.parametrize("exc", NOT_LOST, ids=[f"other{i}" for i in range(len(NOT_LOST))])
def test_other_errors_do_not_requeue(exc):
    assert not lost_peer(exc)


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    log = tmp_path / "scontrol.log"
    tool = tmp_path / "scontrol"
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    for var in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    return log


def test_requeues_own_job_while_restarts_remain(fake_scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert requeue_after_lost_peer(3)
    assert fake_scontrol.read_text().split() == ["requeue", "4242"]


def test_array_task_requeues_itself_not_the_whole_array(fake_scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4250")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert requeue_after_lost_peer(3)
    assert fake_scontrol.read_text().split() == ["requeue", "4242_7"]


@pytest.mark.parametrize(
    "env", [{}, {"SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "3"}], ids=["not_in_slurm", "no_restarts_left"]
)
def test_no_requeue_outside_slurm_or_after_max_requeues(fake_scontrol, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert not requeue_after_lost_peer(3)
    assert not fake_scontrol.exists()


def _lose_a_peer(stage, cfg):
    raise RuntimeError("Connection closed by peer [10.77.0.12]:1")


def test_stage_job_requeues_then_still_fails_this_attempt(fake_scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setattr("simclr_hpc.launch.environment.export_torch_env", lambda: None)
    job = pickle.loads(pickle.dumps(StageJob(f"{__name__}:_lose_a_peer", max_requeues=3)))
    from simclr_hpc.config import Config

    with pytest.raises(RuntimeError, match="closed by peer"):
        job("pretrain", Config().model_dump(mode="json"))
    assert fake_scontrol.read_text().split() == ["requeue", "4242"]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    fake_scontrol.unlink()
    with pytest.raises(RuntimeError):
        StageJob(f"{__name__}:_lose_a_peer")("pretrain", Config().model_dump(mode="json"))  # max_requeues=0: local
    assert not fake_scontrol.exists()
