"""The engine skips finished runs, reruns failed and killed ones, blocks dependents of failures, and chains arrays.

The run function is ``tests.study.fake_runner.run_stage`` (writes result.json, logs each call), so these tests check the
engine's bookkeeping in seconds; the real runner is exercised by the end-to-end test.
"""

from __future__ import annotations

from collections import Counter

import pytest

from simclr_hpc.study.aggregate import collect
from simclr_hpc.study.engine import InProcessBackend, Outcome, dry_run_lines, run_plan
from simclr_hpc.study.plan import load_plan
from tests.study import fake_runner
from tests.study.helpers import study_dict, write_study

FAKE = "tests.study.fake_runner:run_stage"


def _quiet(_line: str) -> None:
    pass


@pytest.fixture
def plan(tmp_path):
    fake_runner.CALLS_THIS_PROCESS["n"] = 0
    return load_plan(write_study(tmp_path))


def _root(plan):
    root = plan.study_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    return root


def _mtimes(plan):
    return {run.key: run.result_path.stat().st_mtime_ns for run in plan.runs if run.result_path.exists()}


def test_a_killed_study_run_again_completes_without_redoing_finished_runs(plan):
    root = _root(plan)
    (root / "kill_after").write_text("15")
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, InProcessBackend(FAKE, log=_quiet), log=_quiet)
    first = fake_runner.calls(root)
    assert len(first) == 15
    before = _mtimes(plan)
    assert len(before) == 15
    (root / "kill_after").unlink()
    fake_runner.CALLS_THIS_PROCESS["n"] = 0
    report = run_plan(plan, InProcessBackend(FAKE, log=_quiet), log=_quiet)
    calls = fake_runner.calls(root)
    assert Counter(calls) == Counter(run.key for run in plan.runs)  # every run exactly once over both attempts
    assert sorted(report.skipped) == sorted(first)
    assert {k: v for k, v in _mtimes(plan).items() if k in before} == before  # finished results untouched
    assert all(row.status == "done" for row in collect(plan))


def test_failed_run_blocks_its_dependents_and_both_rerun_next_time(plan):
    root = _root(plan)
    (root / "fail").write_text("pretrain/rb-s0\n")
    report = run_plan(plan, InProcessBackend(FAKE, log=_quiet), log=_quiet)
    assert report.failed == ["pretrain/rb-s0"]
    # rb-s0 feeds teacher tb (seed 0): the teacher and its pairs are blocked (students are random-init).
    blocked = ["finetune/teacher-tb-lf0.1-s0", "distill/tb-to-sa-lf0.1-s0", "distill/tb-to-sb-lf0.1-s0"]
    assert sorted(report.blocked) == sorted(blocked)
    status = {f"{r.stage}/{r.name}": r for r in collect(plan)}
    assert status["pretrain/rb-s0"].status == "failed"
    assert "injected failure" in status["pretrain/rb-s0"].error
    assert status["distill/tb-to-sb-lf0.1-s0"].status == "blocked"  # listed with its reason, not dropped
    assert status["distill/tb-to-sb-lf0.1-s0"].error == "dependency finetune/teacher-tb-lf0.1-s0 has no result"

    (root / "fail").unlink()
    done_before = _mtimes(plan)
    victim = plan.get("finetune/ra-lf1-h0-linear-s1")
    victim.result_path.unlink()  # a result lost after the fact is redone too
    n_calls = len(fake_runner.calls(root))
    report = run_plan(plan, InProcessBackend(FAKE, log=_quiet), log=_quiet)
    rerun = fake_runner.calls(root)[n_calls:]
    assert sorted(rerun) == sorted(["pretrain/rb-s0", victim.key, *blocked])
    assert not report.failed and not report.blocked
    unchanged = {k: v for k, v in _mtimes(plan).items() if k in done_before and k != victim.key}
    assert unchanged == {k: v for k, v in done_before.items() if k != victim.key}


class FakeSlurm:
    """Non-blocking backend: records each array and hands out increasing job ids, like sbatch does."""

    blocking = False

    def __init__(self):
        self.arrays: list[tuple[str, list[str], list[str], str]] = []

    def submit(self, stage, runs, after):
        job = str(1000 + len(self.arrays))
        self.arrays.append((stage, [r.key for r in runs], list(after), job))
        return [Outcome(r.key, True, job_id=job) for r in runs]


def test_slurm_submission_is_all_at_once_with_afterok_on_the_arrays_it_needs(plan):
    slurm = FakeSlurm()
    report = run_plan(plan, slurm, log=_quiet)
    stages = [(stage, after, job) for stage, _, after, job in slurm.arrays]
    assert stages == [("pretrain", [], "1000"), ("finetune", ["1000"], "1001"), ("transfer", ["1000"], "1002"),
                      ("distill", ["1001"], "1003")]  # random-init students wait only for their teachers
    assert len(report.submitted) == len(plan.runs) and not report.done  # nothing waited for

    # Resubmission after pretraining finished: pretrain is skipped and the later arrays need no afterok on it.
    fake_runner.CALLS_THIS_PROCESS["n"] = 0
    run_plan(plan, InProcessBackend(FAKE, log=_quiet), only={"pretrain"}, log=_quiet)
    slurm = FakeSlurm()
    report = run_plan(plan, slurm, log=_quiet)
    assert [(s, after) for s, _, after, _ in slurm.arrays] == [("finetune", []), ("transfer", []),
                                                               ("distill", ["1000"])]
    assert len(report.skipped) == len(plan.stage("pretrain"))


def test_dry_run_lists_every_array_and_job_and_writes_nothing(plan, tmp_path):
    lines = dry_run_lines(plan)
    jobs = [line for line in lines if line.startswith("  [")]
    assert len(jobs) == len(plan.runs)
    assert [line.split(":")[0] for line in lines if line.startswith("array")] == [
        "array tiny-pretrain-w0", "array tiny-finetune-w1", "array tiny-transfer-w1", "array tiny-distill-w2"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.timeout(180)
def test_local_executor_runs_the_graph_in_order_through_the_launch_api(tmp_path, monkeypatch):
    """submitit's local executor (one process per run) with the fake runner: dependencies finish first."""
    from simclr_hpc.launch import make_request
    from simclr_hpc.study.engine import LaunchBackend

    data = study_dict(seeds=[0], finetune=None, distill=None)
    data["encoders"] = {"ra": data["encoders"]["ra"]}
    data["transfer"]["within"] = [{"dataset": "sh6", "num_classes": [2, 6]}]
    plan = load_plan(write_study(tmp_path, data))
    backend = LaunchBackend(make_request(executor="local", gpus_per_node=0), parallelism=2, target=FAKE, log=_quiet)
    report = run_plan(plan, backend, log=_quiet)
    assert sorted(report.done) == sorted(run.key for run in plan.runs), report
    # The fake runner raises if it starts before its encoder's result.json exists: all done means the order held.
    calls = fake_runner.calls(_root(plan))
    assert calls[0] == "pretrain/ra-s0" and len(calls) == len(plan.runs)
