"""The real ``simclr_hpc.train.runner.run_stage``, holding at one step boundary until Slurm's signal comes: in the first
attempt of a job (``SLURM_RESTART_COUNT`` unset or 0), the boundary after step ``SIMCLR_TEST_HOLD_AT`` waits until this
process got the preemption signal (at most ``SIMCLR_TEST_HOLD_MAX_S``, default 150 s), so a tiny run is still running
when a one-minute time limit's signal arrives, whatever the machine's load; later attempts run unheld.

The wait sits in front of the loop's own per-step check (``train.preempt.stop_requested``) and changes no number the
run computes. The signal is Slurm's (``--signal``); nothing here sends one. ``SIMCLR_*`` names, so that the podman
launcher passes them into the container.
"""

from __future__ import annotations

import os
import time

from simclr_hpc.train import preempt
from simclr_hpc.train.runner import run_stage as _run_stage


def run_stage(stage: str, cfg) -> dict:
    hold_at = int(os.environ.get("SIMCLR_TEST_HOLD_AT", "0"))
    hold_max = float(os.environ.get("SIMCLR_TEST_HOLD_MAX_S", "150"))
    first_attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0
    check, calls = preempt.stop_requested, []

    def held() -> bool:
        calls.append(1)
        if first_attempt and len(calls) == hold_at:
            deadline = time.monotonic() + hold_max
            while not preempt.signalled() and time.monotonic() < deadline:
                time.sleep(0.2)
        return check()

    preempt.stop_requested = held
    return _run_stage(stage, cfg)
