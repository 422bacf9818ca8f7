"""One writer per run directory (``simclr_hpc.runlock``).

Unit tests of the lock (held, released, taken over only from a holder that is provably gone, one winner among racing
takeovers), then the two promises with real processes: a second ``simclr-hpc run`` on a run directory that another
process is training in exits 2 naming the holder and the first run's steps are each logged once; after the holder is
SIGKILLed, the next ``run`` takes the lock over and resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from simclr_hpc.runlock import LOCK_FILE, RunLock, RunLocked, holder_record
from tests.conftest import tiny_overrides
from tests.faults.helpers import REPO, cli, sets


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _write_lock(run_dir, **fields):
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = {**holder_record(), **fields}
    (run_dir / LOCK_FILE).write_text(json.dumps(rec))
    return rec


def test_lock_records_its_holder_refuses_a_second_writer_and_is_released(tmp_path):
    run_dir = tmp_path / "root" / "s" / "pretrain" / "r"
    with RunLock(run_dir):
        rec = json.loads((run_dir / LOCK_FILE).read_text())
        assert rec["host"] == socket.gethostname() and rec["pid"] == os.getpid() and rec["started_at"]
        assert "slurm_job_id" in rec
        with pytest.raises(RunLocked) as err:
            RunLock(run_dir).acquire()
        assert f"pid {os.getpid()}" in str(err.value) and socket.gethostname() in str(err.value)
    assert not (run_dir / LOCK_FILE).exists()
    assert not (tmp_path / "root").exists()  # nothing was written: the directories the lock made are gone again


def test_refused_lock_leaves_no_directories_behind(tmp_path):
    run_dir = tmp_path / "r"
    _write_lock(run_dir)  # held by this (live) process
    lock = RunLock(run_dir)
    with pytest.raises(RunLocked):
        lock.acquire()
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid(), pid_start="1")
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == lock.record["token"]


def test_lock_of_a_reused_pid_is_taken_over(tmp_path):
    # Our own pid, but a start time that is not ours: the process that took the lock is gone and its pid reused.
    _write_lock(tmp_path, pid_start="12345")
    with RunLock(tmp_path):
        pass


def test_lock_on_another_host_is_taken_over_only_when_slurm_says_its_job_ended(tmp_path):
    _write_lock(tmp_path, host="node-elsewhere", pid=1, slurm_job_id="4242")
    for answer in (True, None):  # running, or Slurm cannot tell: never taken
        with pytest.raises(RunLocked) as err:
            RunLock(tmp_path, job_alive=lambda job, a=answer: a).acquire()
        assert "node-elsewhere" in str(err.value) and "Slurm job 4242" in str(err.value)
    with pytest.raises(RunLocked):
        RunLock(tmp_path).acquire()  # no way to ask Slurm: not provably gone
    asked = []
    with RunLock(tmp_path, job_alive=lambda job: asked.append(job) or False):
        pass
    assert asked == ["4242"]


def test_requeued_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    _write_lock(tmp_path, host="node-before-requeue", pid=1, slurm_job_id="777")
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    with RunLock(tmp_path):
        pass


def _race(path, results):
    try:
        with RunLock(path):
            results.put("won")
            time.sleep(0.5)
    except RunLocked:
        results.put("lost")


def test_racing_takeovers_of_a_stale_lock_have_one_winner(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid(), pid_start="1")
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes.count("won") == 1, outcomes


# ---------------------------------------------------------------------------------------------------------------------
# Real processes. The first writer runs the real runner with a pause after each periodic checkpoint
# (tests/faults/slow_runner.py), so the test has a known window in which it is alive and holds the lock.
DRIVER = (
    "import sys; from simclr_hpc.config import load_config; from tests.faults.slow_runner import run_stage; "
    "run_stage('pretrain', load_config(None, sys.argv[1:]))"
)


def _start_holder(overrides, pause_s, release=None):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "FAULTS_PAUSE_AFTER_CKPT_S": str(pause_s),
        "FAULTS_RELEASE_FILE": str(release or ""),
    }
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *overrides],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate, proc, timeout=240):
    start = time.monotonic()
    while not predicate():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.2)


def _steps(run_dir):
    return [
        json.loads(line)["step"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]


def test_second_run_on_a_busy_run_dir_exits_2_naming_the_holder_and_steps_are_logged_once(tmp_path, tiny_shards):
    overrides = tiny_overrides(tiny_shards, tmp_path / "runs", steps=6) + ["run.name=busy"]
    run_dir = tmp_path / "runs" / "t" / "pretrain" / "busy"
    release = tmp_path / "release"
    first = _start_holder(overrides, pause_s=600, release=release)  # paused after each checkpoint until released
    try:
        _wait_for(lambda: (run_dir / "checkpoints" / "latest").exists(), first)
        second = cli("run", "pretrain", *sets(overrides), timeout=300)
        release.touch()
        assert second.returncode == 2, second.stderr[-2000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "another run is writing here" in errors[0], second.stderr[-2000:]
        assert f"pid {first.pid}" in errors[0] and socket.gethostname() in errors[0]
        assert "Traceback" not in second.stderr
        assert first.wait(300) == 0, first.stdout.read()[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    steps = _steps(run_dir)
    assert steps == sorted(set(steps)) and steps == list(range(1, 7)), steps
    assert (run_dir / "result.json").is_file() and not (run_dir / LOCK_FILE).exists()


def test_after_the_holder_is_sigkilled_the_next_run_takes_the_lock_over_and_resumes(tmp_path, tiny_shards):
    overrides = tiny_overrides(tiny_shards, tmp_path / "runs", steps=6) + ["run.name=killed"]
    run_dir = tmp_path / "runs" / "t" / "pretrain" / "killed"
    first = _start_holder(overrides, pause_s=120)
    try:
        _wait_for(lambda: (run_dir / "checkpoints" / "latest").exists(), first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    held = json.loads((run_dir / LOCK_FILE).read_text())
    assert held["pid"] == first.pid  # the killed holder's lock is still there
    proc = cli("run", "pretrain", *sets(overrides), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stderr and "(step 2)" in proc.stderr, proc.stderr[-3000:]
    steps = _steps(run_dir)
    assert steps == list(range(1, 7)), steps
    assert (run_dir / "result.json").is_file() and not (run_dir / LOCK_FILE).exists()


def test_lock_reader_references_and_output_checks_import_no_torch():
    code = (
        "import sys, simclr_hpc.runlock, simclr_hpc.readers, simclr_hpc.references, simclr_hpc.outputs, "
        "simclr_hpc.data.tarcheck, simclr_hpc.doctor; assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def lock_aware_target(stage, cfg, job_alive=None):
    """A job target that takes the run lock's Slurm query, like ``run_stage``."""
    return {"job_alive": job_alive}


def test_jobs_hand_the_slurm_query_to_the_run_lock(monkeypatch):
    from simclr_hpc.config import Config

    # Outside a job there is no submitit environment to export; the argument passing is what is tested here.
    monkeypatch.setattr("simclr_hpc.launch.environment.export_torch_env", lambda: None)
    from simclr_hpc.launch import slurm
    from simclr_hpc.launch.task import StageJob

    out = StageJob("tests.faults.test_run_lock:lock_aware_target")("pretrain", Config().model_dump(mode="json"))
    assert out["job_alive"] is slurm.job_active
