"""On the test cluster: ``study submit`` twice in a row while the first's jobs are queued submits nothing the second
time (the registry and squeue say those runs' jobs are pending), and ``--force`` submits them again.

Right after the first submission the test holds its pending jobs and suspends a running one (``scontrol hold`` /
``suspend``), so they stay queued or running, without using the cluster's CPUs, for as long as the test needs; every
job of the test is cancelled at the end.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from simclr_hpc.launch import Registry, registry_path
from tests.launch.helpers import REPO, cli

pytestmark = [pytest.mark.slurm]

STUDY = {
    "name": "twice",
    "seeds": [0],
    "datasets": {"sh4": {"source": "shapes:4:20:16"}},
    "encoders": {"ra": {"dataset": "sh4"}},
    "defaults": {
        "data.image_size": 16,
        "data.num_workers": 0,
        "model.width": 0.125,
        "train.global_batch": 16,
        "train.steps": 200,
    },
    "finetune": {"encoders": ["ra"], "label_fractions": [1.0], "head_layers": [0], "protocols": ["linear"]},
}


def _squeue(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True, timeout=60
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _freeze(job_ids: list[str]) -> None:
    """Keep the jobs from ending: hold the pending ones, suspend a running one."""
    for job in job_ids:
        subprocess.run(["scontrol", "hold", job], capture_output=True, timeout=60)
        subprocess.run(["scontrol", "suspend", job], capture_output=True, timeout=60)


def test_second_study_submit_while_jobs_are_queued_submits_nothing(slurm_cluster, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({**STUDY, "root": str(tmp_path / "runs")}, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    registry = Registry(registry_path(tmp_path / "runs", "twice"))
    try:
        first = cli("study", "submit", str(study), "--profile", "local", env=env, cwd=tmp_path, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
        jobs = {rec.job_id for rec in registry.all()}
        runs = len(registry.all())  # the pretrain, its fine-tune and any baselines the study adds
        assert runs >= 2 and len(jobs) == runs, first.stdout
        _freeze(sorted(jobs))
        states = _squeue(sorted(jobs))
        assert len(states) == runs and set(states.values()) <= {"PENDING", "SUSPENDED"}, states

        second = cli("study", "submit", str(study), "--profile", "local", env=env, cwd=tmp_path, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "submitted 0" in second.stdout and f"{runs} queued or running" in second.stdout, second.stdout
        assert {rec.job_id for rec in registry.all()} == jobs  # nothing new in the registry ...
        assert _squeue(sorted(jobs)) == states  # ... and the first's jobs are as they were

        forced = cli("study", "submit", str(study), "--profile", "local", "--force", env=env, cwd=tmp_path, timeout=300)
        assert forced.returncode == 0 and f"submitted {runs}" in forced.stdout, forced.stdout + forced.stderr[-2000:]
        assert len({rec.job_id for rec in registry.all()}) == 2 * runs
    finally:
        ids = sorted({rec.job_id.split("_")[0] for rec in registry.all()}) if registry.path.exists() else []
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
