"""Save at the signal (``train/preempt.py``): a real USR2 mid-segment stops the run after that step with a checkpoint of
it, the resumed run redoes no step and ends bitwise equal to an uninterrupted run; on two gloo ranks a signal that only
rank 1 gets stops both after the same step (one collective), with one checkpoint and no hang.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simclr_hpc.config import load_config
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train import preempt
from simclr_hpc.train.runner import run_stage
from tests.conftest import tiny_overrides
from tests.distributed_helpers import REPO, free_port

WORKER = Path(__file__).with_name("rank_worker.py")


def _signal_at(boundary: int, real=preempt.stop_requested):
    """A stop check that sends this process a real USR2 at its ``boundary``-th call (= after step ``boundary``)."""
    calls = []

    def check() -> bool:
        calls.append(1)
        if len(calls) == boundary:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real()

    return check


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _final(run_dir: Path) -> dict:
    return ckpt.load_state(ckpt.latest_whole(run_dir / "checkpoints"))["model"]


def test_usr2_mid_segment_saves_that_step_and_the_resumed_run_is_bitwise_an_uninterrupted_one(
    tiny_shards, tmp_path, monkeypatch
):
    overrides = [*tiny_overrides(tiny_shards, tmp_path, steps=6), "train.ckpt_every_steps=4"]
    whole = run_stage("pretrain", load_config(None, [*overrides, "run.name=whole"]))
    cut_cfg = load_config(None, [*overrides, "run.name=cut"])
    run_dir = cut_cfg.run_dir("pretrain")

    monkeypatch.setattr(preempt, "stop_requested", _signal_at(3))
    with pytest.raises(preempt.Preempted) as stopped:
        run_stage("pretrain", cut_cfg)
    assert stopped.value.step == 3  # the signal came during step 3's boundary: no further step ran
    assert int(ckpt.load_state(ckpt.latest_whole(run_dir / "checkpoints"))["step"]) == 3  # mid-segment (every 4)
    assert not preempt.signalled()
    monkeypatch.undo()

    run_stage("pretrain", cut_cfg)
    lines = _lines(run_dir)
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]  # every step once
    assert lines[2].get("preempted") is True and not any(line.get("preempted") for line in lines[3:])
    assert (lines[3]["resumed_from"], lines[3]["steps_redone"]) == (3, 0)
    ours, ref = _final(run_dir), _final(Path(whole["run_dir"]))
    assert [k for k in ref if not torch.equal(ours[k], ref[k])] == []
    whole_loss = [line["loss"] for line in _lines(Path(whole["run_dir"]))]
    assert [line["loss"] for line in lines] == whole_loss


def test_steps_redone_counts_what_an_attempt_ran_past_its_checkpoint(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)) + '{"step": 9, "lo')
    assert preempt.steps_redone(metrics, 6) == 1
    assert preempt.steps_redone(metrics, 7) == 0
    assert preempt.steps_redone(metrics, 0) == 0
    assert preempt.steps_redone(tmp_path / "missing.jsonl", 4) == 0


@pytest.mark.dist
def test_a_signal_on_rank_1_only_stops_both_ranks_after_the_same_step_with_one_checkpoint(tiny_shards, tmp_path):
    port = free_port()
    overrides = [*tiny_overrides(tiny_shards, tmp_path, steps=8), "train.ckpt_every_steps=4", "run.name=two"]
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
            "SIGNAL_RANK": "1",
            "SIGNAL_AT": "3",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(overrides)],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-3000:]
    stops = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    assert stops == [{"preempted_at": 3, "signalled": False}, {"preempted_at": 3, "signalled": True}]
    run_dir = load_config(None, overrides).run_dir("pretrain")
    assert int(ckpt.load_state(ckpt.latest_whole(run_dir / "checkpoints"))["step"]) == 3
    assert [line["step"] for line in _lines(run_dir)] == [1, 2, 3]
