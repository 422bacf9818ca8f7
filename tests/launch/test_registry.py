"""The job registry and the local executor (same submitit code path as Slurm, on this machine)."""

from __future__ import annotations

import json
from pathlib import Path

from simclr_hpc import launch
from simclr_hpc.config import load_config
from simclr_hpc.launch import LaunchRequest, Registry, registry_path, submit_array, submit_stage
from simclr_hpc.launch.registry import JobRecord
from tests.launch.helpers import STANDIN, cli, no_slurm_env


def _cfg(tmp_path, name, steps=2):
    return load_config(None, [f"run.root={tmp_path}/runs", "run.study=loc", f"run.name={name}", f"train.steps={steps}"])


def test_local_executor_runs_the_stage_and_the_registry_sees_it_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_STEP_S", "0.05")
    rec = submit_stage(
        "pretrain", _cfg(tmp_path, "one"), LaunchRequest(executor="local", gpus_per_node=0), target=STANDIN
    )
    assert rec.executor == "local" and rec.state == "SUBMITTED"
    assert launch.wait(rec, poll_s=0.2, timeout_s=60) == "COMPLETED"
    result = json.loads((tmp_path / "runs/loc/pretrain/one/result.json").read_text())
    assert result["world_size"] == 1 and result["master"].endswith(":" + str(20000 + int(rec.job_id) % 10000))
    (row,) = Registry(registry_path(tmp_path / "runs", "loc")).all()
    assert row.state == "COMPLETED" and row.result_hash and row.run_dir == str(tmp_path / "runs/loc/pretrain/one")


def test_local_array_keeps_its_parallelism_cap_and_afterok_order(tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_STEP_S", "0.2")
    first = submit_stage(
        "pretrain", _cfg(tmp_path, "base", 2), LaunchRequest(executor="local", gpus_per_node=0), target=STANDIN
    )
    recs = submit_array(
        "finetune",
        [_cfg(tmp_path, f"ft{i}", 2) for i in range(3)],
        LaunchRequest(executor="local", gpus_per_node=0),
        parallelism=1,
        dependency=[first.job_id],
        target=STANDIN,
    )
    assert [launch.wait(r, poll_s=0.2, timeout_s=120) for r in recs] == ["COMPLETED"] * 3
    base_done = (tmp_path / "runs/loc/pretrain/base/result.json").stat().st_mtime
    spans = []
    for i in range(3):
        run_dir = tmp_path / f"runs/loc/finetune/ft{i}"
        spans.append(((run_dir / "steps.log").stat().st_mtime, (run_dir / "result.json").stat().st_mtime))
    starts = sorted(spans)
    assert min(s for s, _ in starts) > base_done  # afterok: after the pretrain run finished
    # parallelism 1: each run's first step ends after the previous run wrote its result
    assert all(starts[i + 1][0] >= starts[i][1] - 0.2 for i in range(2))


def test_registry_without_slurm_decides_by_result_json(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", no_slurm_env(tmp_path)["PATH"])
    reg = Registry(tmp_path / "s" / "registry.sqlite")
    done_dir, lost_dir = tmp_path / "s/pretrain/a", tmp_path / "s/pretrain/b"
    done_dir.mkdir(parents=True)
    (done_dir / "result.json").write_text("{}")
    common = dict(
        study="s",
        stage="pretrain",
        executor="slurm",
        state="RUNNING",
        log_dir="x",
        stdout="x",
        stderr="x",
        config_hash="h",
    )
    reg.add(
        [
            JobRecord(run_name="a", job_id="101", run_dir=str(done_dir), **common),
            JobRecord(run_name="b", job_id="102", run_dir=str(lost_dir), **common),
        ]
    )
    states = {r.job_id: r.state for r in launch.refresh(reg)}
    assert states == {"101": "COMPLETED", "102": "ENDED"}
    assert reg.find("101")[0].result_hash


def test_jobs_logs_cancel_commands_on_an_empty_root(tmp_path):
    env = no_slurm_env(tmp_path)
    proc = cli("jobs", "--root", str(tmp_path), env=env)
    assert proc.returncode == 0 and "no jobs recorded" in proc.stdout
    proc = cli("logs", "123", "--root", str(tmp_path), env=env)
    assert proc.returncode == 2 and "not in any registry" in proc.stderr
    proc = cli("cancel", "12;id", "--root", str(tmp_path), env=env)
    assert proc.returncode == 2 and "not a job id" in proc.stderr
    proc = cli("jobs", "--study", "../x", "--root", str(tmp_path), env=env)
    assert proc.returncode == 2


def fail_one(stage, cfg):
    """A run target for the lane test: run ``bad`` raises, the others run the stand-in."""
    if cfg.run.name == "bad":
        raise ValueError("this run fails on purpose")
    from tests.launch.standin import run_stage

    return run_stage(stage, cfg)


def test_local_array_runs_in_parallelism_workers_and_a_failed_run_does_not_stop_the_next(tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_STEP_S", "0.05")
    names = ["a", "bad", "c", "d", "e"]
    recs = submit_array(
        "finetune",
        [_cfg(tmp_path, n, 2) for n in names],
        LaunchRequest(executor="local", gpus_per_node=0),
        parallelism=2,
        target="tests.launch.test_registry:fail_one",
    )
    assert [r.run_name for r in recs] == names  # records come back in submission order
    # Two worker processes (lanes), not one per run, dealt back and forth: runs 0, 3, 4 in one, 1, 2 in the other.
    assert len({r.job_id for r in recs}) == 2
    assert recs[0].job_id == recs[3].job_id == recs[4].job_id and recs[1].job_id == recs[2].job_id
    states = [launch.wait(r, poll_s=0.2, timeout_s=120) for r in recs]
    assert states == ["COMPLETED", "FAILED", "COMPLETED", "COMPLETED", "COMPLETED"]
    # The run after the failed one in its lane still ran; the lane's log names the failure.
    assert (tmp_path / "runs/loc/finetune/c/result.json").is_file()
    assert "bad: ValueError: this run fails on purpose" in open(recs[1].stderr).read()


def _row(tmp_path, name="a"):
    return JobRecord(
        study="s",
        stage="pretrain",
        run_name=name,
        job_id="1",
        executor="slurm",
        state="PENDING",
        run_dir=str(tmp_path / "s/pretrain" / name),
        log_dir="x",
        stdout="x",
        stderr="x",
        config_hash="h",
    )


def test_registry_locks_with_a_lock_directory_not_posix_locks(tmp_path):
    """SQLite's unix-dotfile VFS: a transaction holds ``registry.sqlite.lock`` (mkdir, atomic on NFS and Lustre too),
    never an fcntl lock, which such mounts often lack."""
    reg = Registry(tmp_path / "s" / "registry.sqlite")
    reg.add([_row(tmp_path)])
    seen = []
    con = reg._connect()
    con.execute("BEGIN IMMEDIATE")
    seen.append(Path(f"{reg.path}.lock").is_dir())
    con.rollback()
    con.close()
    assert seen == [True] and not Path(f"{reg.path}.lock").exists()


def test_a_lock_left_by_a_killed_process_is_cleared_and_the_write_goes_through(tmp_path, monkeypatch):
    import os
    import time

    from simclr_hpc.launch import registry as registry_module

    reg = Registry(tmp_path / "s" / "registry.sqlite")
    reg.add([_row(tmp_path)])
    lock = Path(f"{reg.path}.lock")
    lock.mkdir()  # what a process killed inside a transaction leaves
    old = time.time() - registry_module.STALE_LOCK_S - 1
    os.utime(lock, (old, old))
    monkeypatch.setattr(registry_module.sqlite3, "connect", lambda *a, **k: sqlite_connect(*a, **{**k, "timeout": 0.2}))
    assert reg.record_failure(tmp_path / "s/pretrain/a", "ValueError: boom")
    assert reg.all()[0].reason == "ValueError: boom" and not lock.exists()


_CONNECT = __import__("sqlite3").connect


def sqlite_connect(*args, **kwargs):
    return _CONNECT(*args, **kwargs)
