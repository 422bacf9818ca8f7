"""Shared by the time-limit tests, bare (tests/preemption) and in the image (tests/containers): a paced tiny pretrain
that outlasts a one-minute limit, and the checks of what must hold after Slurm's own signal requeued it.

Sizing: slurmctld looks at time limits and signal deadlines every 30 s (PERIODIC_TIMEOUT) and sends ``--signal=USR2@S``
once ``now >= end - S - 30`` ("up to 60 s earlier than specified", sbatch(1)). With ``--time=2`` and S = 10 the signal
comes 80-110 s into an attempt and the kill, at the first check past the limit, 30-60 s after it. ``--time=1`` would
signal 20-50 s in, and on these 2 shared cores (load ~19) a requeued attempt was seen still importing torch 28 s in: a
signal before Python has any handler kills the task (USR2's default action). The attempt that trains step HOLD_AT
holds after it until the signal (tests/preemption/paced_runner.py); the checkpoint interval is 8, so it stops
mid-segment. An attempt may get the signal before its loop starts (submitit's handler, or the flag set by `run`, then
requeues it the same way) or a resumed one may be signalled again: the checks allow both, max_requeues is 10.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import torch
import yaml

from simclr_hpc.launch import slurm as sl
from simclr_hpc.train import checkpoint as ckpt
from tests.launch.helpers import wait_until

STEPS = 16
HOLD_AT = 5
SIGNAL_S = 10
TIME_MIN = 2
TARGET = "tests.preemption.paced_runner:run_stage"
REPO = Path(__file__).resolve().parents[2]


def write_config(base: Path, shards: Path, name: str) -> Path:
    """A tiny pretrain config under ``base`` (run root ``base/runs``), checkpoints every 8 steps."""
    config = base / f"{name}.yaml"
    config.write_text(
        f"run: {{root: {base}/runs, study: limit, name: {name}}}\n"
        f"data: {{shards: {shards}, image_size: 16, num_workers: 0}}\n"
        "model: {backbone: resnet18, width: 0.125, proj_dim: 16}\n"
        f"train: {{steps: {STEPS}, global_batch: 16, ckpt_every_steps: 8, log_every_steps: 1,"
        " eval_batch_per_device: 64}\n"
        "optim: {warmup_steps: 1}\n"
    )
    return config


def write_profile(path: Path, **fields) -> Path:
    """configs/clusters/local.yaml (the test cluster's profile) with ``signal_delay_s`` = SIGNAL_S, room for more
    requeues than one on a loaded machine, and ``fields``."""
    profile = yaml.safe_load((REPO / "configs/clusters/local.yaml").read_text())
    profile.update(signal_delay_s=SIGNAL_S, max_requeues=10, **fields)
    path.write_text(yaml.safe_dump(profile))
    return path


@dataclasses.dataclass(frozen=True)
class TemplateJob:
    """What the checks need of a job that slurm/pretrain.sbatch ran (the launcher's JobRecord has the same fields)."""

    job_id: str
    run_dir: Path
    log_dir: str
    log_glob: str


def restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", job_id, "-o"], capture_output=True, text=True).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return int(fields.get("Restarts", "0"))


def wait_done(rec, timeout_s: float = 420) -> int:
    """Wait for the job to complete; returns how often Slurm restarted it (read while the job is still known)."""
    seen = 0

    def finished() -> bool:
        nonlocal seen
        seen = max(seen, restarts(rec.job_id))
        return sl.job_state(rec.job_id) in sl.TERMINAL_STATES

    wait_until(finished, timeout_s, f"job {rec.job_id} to end", poll_s=1.0)
    return seen


def check_requeued_at_the_limit(rec, run_dir: Path, ref_dir: Path, n_restarts: int) -> None:
    """What must hold: COMPLETED after >= 1 requeue that the job asked for at Slurm's signal; every step once; each
    stop wrote a checkpoint of its own step and the resumed attempt redid at most one step; weights bitwise equal to
    the uninterrupted run's."""
    pattern = getattr(rec, "log_glob", f"{rec.job_id}_*_log.*")
    logs = "".join(Path(p).read_text() for p in Path(rec.log_dir).glob(pattern))
    state = sl.job_state(rec.job_id)
    assert state == "COMPLETED", f"{state}\n{logs[-4000:]}"
    assert n_restarts >= 1, logs[-4000:]
    assert "requeue requested" in logs and "scontrol requeue" in logs, logs[-4000:]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, STEPS + 1)), logs[-4000:]  # every step once
    stops = [line["step"] for line in lines if line.get("preempted")]
    resumes = [(line["resumed_from"], line["steps_redone"]) for line in lines if "resumed_from" in line]
    assert stops[:1] == [HOLD_AT] and len(resumes) == len(stops), (stops, resumes, logs[-4000:])
    assert [frm for frm, _ in resumes] == stops  # each attempt resumed from the step its predecessor stopped at
    assert all(redone <= 1 for _, redone in resumes), resumes
    ours = ckpt.load_state(ckpt.latest_whole(run_dir / "checkpoints"))
    ref = ckpt.load_state(ckpt.latest_whole(ref_dir / "checkpoints"))
    assert ours["step"] == ref["step"] == STEPS
    assert [k for k in ref["model"] if not torch.equal(ours["model"][k], ref["model"][k])] == []
