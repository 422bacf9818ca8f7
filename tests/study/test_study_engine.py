"""The study pipeline skips finished runs, reruns failed and killed ones, blocks dependents of failures, and chains
arrays.

The run function is ``tests.study.fake_runner.run_stage`` (writes result.json, logs each call), so these tests check the
pipeline's bookkeeping in seconds; the real runner is exercised by the end-to-end test.
"""

from __future__ import annotations

from collections import Counter

import pytest

from simclr_hpc.launch import EXECUTORS
from simclr_hpc.launch.registry import Registry, registry_path
from simclr_hpc.study.aggregate import collect
from simclr_hpc.study.pipeline import dry_run, run_study, submit_study
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.walk import StudyOptions
from tests.study import fake_runner
from tests.study.helpers import study_dict, write_study
from tests.study.recording import NAME, RecordingLauncher

FAKE = "tests.study.fake_runner:run_stage"
IN_PROCESS = StudyOptions(executor="inprocess", target=FAKE)


def _quiet(_line: str) -> None:
    pass


@pytest.fixture
def path(tmp_path):
    fake_runner.CALLS_THIS_PROCESS["n"] = 0
    return write_study(tmp_path)


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setitem(EXECUTORS, NAME, RecordingLauncher)
    monkeypatch.setattr(RecordingLauncher, "handed", [])
    return RecordingLauncher


def _root(plan):
    root = plan.study_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    return root


def _mtimes(plan):
    return {run.key: run.result_path.stat().st_mtime_ns for run in plan.runs if run.result_path.exists()}


def _run(path, **changes):
    options = StudyOptions(**{**IN_PROCESS.__dict__, **changes})
    return run_study(path, options, report=False, log=_quiet)[1]


def test_a_killed_study_run_again_completes_without_redoing_finished_runs(path):
    plan = load_plan(path)
    root = _root(plan)
    (root / "kill_after").write_text("15")
    with pytest.raises(KeyboardInterrupt):
        _run(path)
    first = fake_runner.calls(root)
    assert len(first) == 15
    before = _mtimes(plan)
    assert len(before) == 15
    (root / "kill_after").unlink()
    fake_runner.CALLS_THIS_PROCESS["n"] = 0
    outcome = _run(path)
    calls = fake_runner.calls(root)
    assert Counter(calls) == Counter(run.key for run in plan.runs)  # every run exactly once over both attempts
    assert sorted(outcome.skipped) == sorted(first)
    assert {k: v for k, v in _mtimes(plan).items() if k in before} == before  # finished results untouched
    assert all(row.status == "done" for row in collect(plan))


def test_failed_run_blocks_its_dependents_and_both_rerun_next_time(path):
    plan = load_plan(path)
    root = _root(plan)
    (root / "fail").write_text("pretrain/rb-s0\n")
    outcome = _run(path)
    assert outcome.failed == ["pretrain/rb-s0"]
    # rb-s0 feeds teacher tb (seed 0): the teacher and its pairs are blocked (students are random-init).
    blocked = ["finetune/teacher-tb-lf0.1-s0", "distill/tb-to-sa-lf0.1-s0", "distill/tb-to-sb-lf0.1-s0"]
    assert sorted(outcome.blocked) == sorted(blocked)
    status = {f"{r.stage}/{r.name}": r for r in collect(plan)}
    assert status["pretrain/rb-s0"].status == "failed"
    assert "injected failure" in status["pretrain/rb-s0"].error  # the job's own reason, from the registry
    assert status["distill/tb-to-sb-lf0.1-s0"].status == "blocked"  # listed with its reason, not dropped
    assert status["distill/tb-to-sb-lf0.1-s0"].error == "dependency finetune/teacher-tb-lf0.1-s0 has no result"

    (root / "fail").unlink()
    done_before = _mtimes(plan)
    victim = plan.get("finetune/ra-lf1-h0-linear-s1")
    victim.result_path.unlink()  # a result lost after the fact is redone too
    n_calls = len(fake_runner.calls(root))
    outcome = _run(path)
    rerun = fake_runner.calls(root)[n_calls:]
    assert sorted(rerun) == sorted(["pretrain/rb-s0", victim.key, *blocked])
    assert not outcome.failed and not outcome.blocked
    unchanged = {k: v for k, v in _mtimes(plan).items() if k in done_before and k != victim.key}
    assert unchanged == {k: v for k, v in done_before.items() if k != victim.key}


def test_submission_is_all_at_once_with_afterany_on_the_arrays_it_needs(path, recording):
    plan = load_plan(path)
    outcome = submit_study(path, StudyOptions(executor=NAME), log=_quiet)
    stages = [(stage, after, job) for stage, _, after, job in recording.handed]
    assert stages == [
        ("pretrain", [], "1000"),
        ("finetune", ["1000"], "1001"),
        ("transfer", ["1000"], "1002"),
        ("distill", ["1001"], "1003"),
    ]  # random-init students wait only for their teachers
    assert len(outcome.submitted) == len(plan.runs) and not outcome.done  # nothing waited for

    # A second submission while those jobs are queued submits nothing: the live jobs are reused.
    again = submit_study(path, StudyOptions(executor=NAME), log=_quiet)
    assert not again.submitted and sorted(again.reused) == sorted(run.key for run in plan.runs)
    assert len(recording.handed) == 4

    # After pretraining finished (run here with --force: the recorded jobs never end), pretrain is skipped and later
    # arrays need nothing of it.
    _run(path, only=("pretrain",), force=True)
    recording.handed.clear()
    outcome = submit_study(path, StudyOptions(executor=NAME, force=True), log=_quiet)
    assert [(s, after) for s, _, after, _ in recording.handed] == [
        ("finetune", []),
        ("transfer", []),
        ("distill", ["1000"]),
    ]
    assert len(outcome.skipped) == len(plan.stage("pretrain"))
    assert len(Registry(registry_path(plan.study.root, plan.study.name)).all()) > len(plan.runs)


def test_dry_run_lists_every_array_and_job_and_writes_nothing(path, tmp_path):
    plan = load_plan(path)
    lines = dry_run(path, StudyOptions())
    jobs = [line for line in lines if line.startswith("  [")]
    assert len(jobs) == len(plan.runs)
    assert [line.split(":")[0] for line in lines if line.startswith("array")] == [
        "array tiny-pretrain-w0",
        "array tiny-finetune-w1",
        "array tiny-transfer-w1",
        "array tiny-distill-w2",
    ]
    distill = next(line for line in lines if line.startswith("array tiny-distill-w2"))
    assert distill.endswith("afterany: tiny-finetune-w1")  # the arrays holding what it needs, by name
    assert not (tmp_path / "runs").exists()


@pytest.mark.timeout(180)
def test_local_executor_runs_the_graph_in_order_through_the_launch_api(tmp_path):
    """submitit's local executor (worker processes) with the fake runner: dependencies finish first."""
    data = study_dict(seeds=[0], finetune=None, distill=None)
    data["encoders"] = {"ra": data["encoders"]["ra"]}
    data["transfer"]["within"] = [{"dataset": "sh6", "num_classes": [2, 6]}]
    path = write_study(tmp_path, data)
    plan = load_plan(path)
    outcome = _run(path, executor="local", parallelism=2)
    assert sorted(outcome.done) == sorted(run.key for run in plan.runs), outcome
    # The fake runner raises if it starts before its encoder's result.json exists: all done means the order held.
    calls = fake_runner.calls(_root(plan))
    assert calls[0] == "pretrain/ra-s0" and len(calls) == len(plan.runs)
