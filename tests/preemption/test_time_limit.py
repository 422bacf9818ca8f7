"""Time-limit preemption for real, bare (no container): a ``--time=2`` pretrain on the local Slurm cluster gets Slurm's
own ``USR2`` (``--signal=USR2@10``) before its limit (nobody sends it by hand), saves a checkpoint of the step it is at,
asks the batch script to requeue it, resumes and completes with every step run once and weights bitwise equal to an
uninterrupted run. Submitted twice at once: through ``simclr-hpc submit`` (submitit) and through slurm/pretrain.sbatch.
The same in the image: tests/containers/test_podman_jobs.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simclr_hpc.config import load_config
from simclr_hpc.launch import LaunchRequest, submit_stage
from tests.faults.helpers import cli
from tests.preemption.helpers import (
    HOLD_AT,
    SIGNAL_S,
    TARGET,
    TIME_MIN,
    TemplateJob,
    check_requeued_at_the_limit,
    wait_done,
    write_config,
    write_profile,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_a_job_at_its_time_limit_saves_at_slurms_signal_requeues_and_ends_bitwise_equal(
    slurm_cluster, tiny_shards, tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # sbatch exports this environment: the job runs this checkout
    monkeypatch.setenv("SIMCLR_TEST_HOLD_AT", str(HOLD_AT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = write_config(tmp_path, tiny_shards, "bare")
    cfg = load_config(config)
    profile = write_profile(tmp_path / "limit.yaml")
    rec = submit_stage(
        "pretrain", cfg, LaunchRequest(profile=str(profile), gpus_per_node=0, time=str(TIME_MIN)), target=TARGET
    )
    script = (Path(rec.log_dir) / f"{rec.job_id}_submission.sh").read_text()
    assert f"#SBATCH --time={TIME_MIN}\n" in script and f"#SBATCH --signal=USR2@{SIGNAL_S}\n" in script

    # The same run through the plain template (its own requeue lines), at the same time.
    sbatch_dir = tmp_path / "sbatch"
    sbatch_dir.mkdir()
    command = sbatch_dir / "simclr-hpc-held"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests/preemption/held_cli.py"}" "$@"\n')
    command.chmod(0o755)
    proc = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--time={TIME_MIN}",
            f"--signal=USR2@{SIGNAL_S}",
            "--nodes=1",
            "--ntasks-per-node=1",
            "--gpus-per-node=1",
            "--cpus-per-task=2",
            f"--chdir={sbatch_dir}",
            f"--output={sbatch_dir}/%j.out",
            str(REPO / "slurm/pretrain.sbatch"),
            str(config),
            "--set",
            "run.name=sbatch",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SIMCLR_IMAGE": "", "SIMCLR_MAX_REQUEUES": "10", "SIMCLR_CMD": str(command)},
    )
    assert proc.returncode == 0, proc.stderr
    template_job = proc.stdout.strip()

    # The uninterrupted reference, meanwhile: the same config in one process.
    ref = cli("run", "pretrain", "-c", str(config), "--set", "run.name=ref", timeout=400)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_dir = cfg.run_dir("pretrain").with_name("ref")
    n_restarts = wait_done(rec)
    check_requeued_at_the_limit(rec, Path(rec.run_dir), ref_dir, n_restarts)

    template = TemplateJob(template_job, ref_dir.with_name("sbatch"), str(sbatch_dir), "*.out")
    check_requeued_at_the_limit(template, template.run_dir, ref_dir, wait_done(template))
    assert "exit code 75" in (sbatch_dir / f"{template_job}.out").read_text()  # the tasks' "requeue me" status
