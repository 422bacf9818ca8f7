"""The real ``simclr_hpc.train.runner.run_stage``, with a pause after every periodic checkpoint (for the Slurm fault
tests): a tiny run finishes in seconds, and the pause gives a test a known window in which to requeue, preempt or kill.

The pause (``FAULTS_PAUSE_AFTER_CKPT_S`` seconds, from the job's environment) comes after the checkpoint is whole and
every rank has passed the checkpoint barrier; it changes no number the run computes. ``FAULTS_RELEASE_FILE``, if set,
ends every pause as soon as that file exists (a test holds the run exactly as long as it needs).
"""

from __future__ import annotations

import os
import time

from simclr_hpc.train import loop
from simclr_hpc.train.runner import run_stage as _run_stage


def run_stage(stage: str, cfg) -> dict:
    pause = float(os.environ.get("FAULTS_PAUSE_AFTER_CKPT_S", "0"))
    release = os.environ.get("FAULTS_RELEASE_FILE")
    save = loop._save

    def _save_then_pause(ctx, task, model, optimizer, step, skipped, export):
        save(ctx, task, model, optimizer, step, skipped, export)
        end = time.monotonic() + pause
        while not export and time.monotonic() < end and not (release and os.path.exists(release)):
            time.sleep(0.1)

    loop._save = _save_then_pause
    return _run_stage(stage, cfg)
