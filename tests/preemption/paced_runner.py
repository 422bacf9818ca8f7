"""The real ``simclr_hpc.train.runner.run_stage``, holding at one step until Slurm's signal comes: the attempt that
trains step ``SIMCLR_TEST_HOLD_AT`` waits at that step's boundary until this process got the preemption signal (at
most ``SIMCLR_TEST_HOLD_MAX_S``, default 150 s), so a tiny run is still training when a one-minute time limit's signal
arrives, whatever the machine's load. An attempt that resumes past that step runs unheld; so does one that was
signalled before its loop started (submitit's handler requeued it, and the next attempt trains the step again).

The wait sits in front of the loop's own per-step check (``train.preempt.stop_requested``) and changes no number the
run computes. The signal is Slurm's (``--signal``); nothing here sends one. ``SIMCLR_*`` names, so that the podman
launcher passes them into the container.
"""

from __future__ import annotations

import os
import time

from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train import preempt
from simclr_hpc.train.runner import run_stage as _run_stage


def run_stage(stage: str, cfg, job_alive=None) -> dict:
    hold_at = int(os.environ.get("SIMCLR_TEST_HOLD_AT", "0"))
    hold_max = float(os.environ.get("SIMCLR_TEST_HOLD_MAX_S", "150"))
    latest = ckpt.latest_whole(cfg.run_dir(stage) / "checkpoints")
    step = int(ckpt.load_state(latest)["step"]) if latest else 0  # where this attempt's loop starts
    check = preempt.stop_requested

    def held() -> bool:
        nonlocal step
        step += 1  # the loop calls this once per step, right after the step
        if step == hold_at:
            deadline = time.monotonic() + hold_max
            while not preempt.signalled() and time.monotonic() < deadline:
                time.sleep(0.2)
        return check()

    preempt.stop_requested = held
    return _run_stage(stage, cfg, job_alive=job_alive)
