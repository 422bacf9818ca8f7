"""On the test cluster: a study whose one upstream task fails ends with nothing pending. Its dependents start
(``afterany``), find their input run unfinished and fail at once with that reason, which ``study status`` shows; a
second ``study submit`` after the cause is fixed resubmits exactly what did not finish.

The jobs run ``tests.study.fake_runner`` (seconds per run): it checks its inputs with the real
``references.check_inputs`` first, as the runner does, and fails on purpose for the run keys in ``<root>/fail``.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from simclr_hpc import launch
from simclr_hpc.study.pipeline import dry_run, submit_study
from simclr_hpc.study.publish import status_lines
from simclr_hpc.study.walk import StudyOptions
from tests.launch.helpers import REPO

pytestmark = [pytest.mark.slurm]

FAKE = "tests.study.fake_runner:run_stage"
STUDY = {
    "name": "upstream",
    "seeds": [0, 1],
    "datasets": {"sh4": {"source": "shapes:4:20:16"}},
    "encoders": {"ra": {"dataset": "sh4"}},
    "finetune": {
        "encoders": ["ra"],
        "label_fractions": [1.0],
        "head_layers": [0],
        "protocols": ["linear"],
        "baselines": [],
    },
}
UPSTREAM, DOWNSTREAM = "pretrain/ra-s0", "finetune/ra-lf1-h0-linear-s0"


def _quiet(_line: str) -> None:
    pass


def _settle(registry) -> list:
    records = registry.all()
    launch.wait(records, poll_s=1.0, timeout_s=240)
    return launch.refresh(registry)


@pytest.mark.timeout(600)
def test_failed_upstream_task_leaves_nothing_pending_and_a_second_submit_resubmits_what_did_not_finish(
    slurm_cluster, tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # sbatch exports this environment: the jobs import the fake runner
    root = tmp_path / "runs"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "root": str(root)}, sort_keys=False))
    options = StudyOptions(profile="local", target=FAKE)
    root.mkdir()
    (root / "fail").write_text(UPSTREAM + "\n")
    registry = launch.Registry(launch.registry_path(root, "upstream"))
    try:
        planned = [line.split()[1] for line in dry_run(path, options) if line.startswith("  [")]
        first = submit_study(path, options, log=_quiet)
        assert first.submitted == planned and len(planned) == 4  # the dry run's job list is what was submitted
        states = {f"{r.stage}/{r.run_name}": r for r in _settle(registry)}
        assert states[UPSTREAM].state == "FAILED" and states[DOWNSTREAM].state == "FAILED"
        assert {states[k].state for k in states if k not in (UPSTREAM, DOWNSTREAM)} == {"COMPLETED"}
        status = "\n".join(status_lines(path))
        assert "queued" not in status and "running" not in status, status
        down = next(line for line in status.splitlines() if DOWNSTREAM in line)
        assert "failed" in down and "finetune.encoder" in down and "has not finished" in down, status
        assert "injected failure" in next(line for line in status.splitlines() if UPSTREAM in line), status

        (root / "fail").unlink()  # the cause, fixed
        second = submit_study(path, options, log=_quiet)
        assert sorted(second.submitted) == sorted([UPSTREAM, DOWNSTREAM]) and len(second.skipped) == 2
        _settle(registry)
        assert status_lines(path)[-1] == "total: 4 runs, 4 done"
    finally:
        ids = sorted({rec.job_id.split("_")[0] for rec in registry.all()}) if registry.path.exists() else []
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
