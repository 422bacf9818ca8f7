"""The dry run of a sweep prints the log folder its submission gets: one stamp names both (on the real Slurm cluster)."""

from __future__ import annotations

import datetime
import shlex
import types
from pathlib import Path

import pytest

from simclr_hpc import launch
from simclr_hpc.config import load_config
from simclr_hpc.launch import LaunchRequest, render_array, submit_array
from simclr_hpc.launch import launcher as arrays_module
from tests.launch.helpers import REPO, STANDIN

pytestmark = pytest.mark.slurm


class _FrozenClock(datetime.datetime):
    """``now()`` is always the same instant, so the dry run and the submission see the same time."""

    @classmethod
    def now(cls, tz=None):
        return cls(2026, 12, 1, 9, 30, 15, 123456)


def test_dry_run_of_a_sweep_prints_the_log_folder_the_submitted_array_gets(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # sbatch exports this environment: the stand-in imports this checkout
    monkeypatch.setenv("STANDIN_STEP_S", "0.1")
    monkeypatch.setattr(arrays_module, "dt", types.SimpleNamespace(datetime=_FrozenClock))
    root = tmp_path / "runs"
    cfgs = [
        load_config(None, [f"run.root={root}", "run.study=stamp", f"run.name=r{i}", "train.steps=1"]) for i in range(2)
    ]
    request = LaunchRequest(profile="local", gpus_per_node=0)
    [script] = render_array("finetune", cfgs, request, target=STANDIN)
    dry_output = next(
        shlex.split(line.partition("=")[2])[0] for line in script.splitlines() if line.startswith("#SBATCH --output=")
    )
    records = submit_array("finetune", cfgs, request, target=STANDIN)
    assert str(Path(dry_output).parent) == records[0].log_dir
    submitted = (Path(records[0].log_dir) / f"{records[0].array_job_id}_submission.sh").read_text()
    assert f"#SBATCH --output={dry_output}" in submitted
    assert [launch.wait(r, poll_s=0.5, timeout_s=120) for r in records] == ["COMPLETED"] * 2
