"""On the real local Slurm cluster (slurm/testing, nodes node1 and node2): multi-node runs, arrays after a dependency,
requeue and preemption, cancel, validation against the cluster, hostile paths, containers.

Most jobs run the stand-in ``tests/launch/standin.py`` (fast, and it logs every step it executes); the two-node pretrain
runs the real ``simclr_hpc.train.runner.run_stage``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simclr_hpc import launch
from simclr_hpc.config import load_config
from simclr_hpc.launch import LaunchRequest, Registry, registry_path, submit_array, submit_stage
from simclr_hpc.launch import slurm as sl
from tests.launch.helpers import REPO, STANDIN, cli, wait_until

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _job_env(monkeypatch):
    # sbatch exports the submitting environment: the stand-in must import from this checkout, quickly.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("STANDIN_STEP_S", "0.5")


def _cfg(root: Path, study: str, name: str, steps: int = 2, extra: list[str] = ()):
    return load_config(
        None, [f"run.root={root}", f"run.study={study}", f"run.name={name}", f"train.steps={steps}", *extra]
    )


def _sacct_times(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-o", "JobID,Start,End", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("|")[0]: tuple(line.split("|")[1:3]) for line in out.splitlines() if line}


@pytest.fixture(scope="module")
def tiny_pretrain_config(tmp_path_factory):
    from simclr_hpc.data.shards import write_shards

    base = tmp_path_factory.mktemp("tiny")
    write_shards("shapes:4", base / "shapes4", shard_size=64)
    config = base / "tiny.yaml"
    config.write_text(
        f"run: {{root: {base}/runs, study: tiny, name: twonode}}\n"
        f"data: {{shards: {base}/shapes4, image_size: 16, num_workers: 0}}\n"
        "model: {backbone: resnet18, width: 0.125, proj_dim: 16}\n"
        "train: {steps: 4, global_batch: 16, ckpt_every_steps: 2, log_every_steps: 1, eval_batch_per_device: 64}\n"
        "optim: {warmup_steps: 1}\n"
    )
    return config, base


def test_two_node_pretrain_trains_one_run_across_node1_and_node2(slurm_cluster, tiny_pretrain_config):
    config, base = tiny_pretrain_config
    args = ["submit", "pretrain", "-c", str(config), "--nodes", "2", "--gpus-per-node", "1", "--profile", "local"]
    dry = cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split("job ")[1].split()[0]
    run_dir = base / "runs/tiny/pretrain/twonode"
    # the dry run printed exactly the script that was submitted
    assert (run_dir / "slurm" / f"{job_id}_submission.sh").read_text() == dry.stdout
    wait_until(lambda: sl.job_state(job_id) in sl.TERMINAL_STATES, 180, f"job {job_id} to end", poll_s=1)
    assert sl.job_state(job_id) == "COMPLETED", (run_dir / "slurm" / f"{job_id}_0_log.err").read_text()[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and sorted(result["hostnames"]) == ["node1", "node2"]
    assert result["steps"] == 4
    jobs = cli("jobs", "--root", str(base / "runs"))
    assert f"{job_id}" in jobs.stdout and "COMPLETED" in jobs.stdout

    # The same global batch in one process. The 2 ranks read a stream split by rank (by design), so the samples differ
    # and step-wise equality is not expected; exact equality on identical data is tests/test_distributed.py's job.
    # Stated tolerance here: the mean per-step loss agrees within 10 %.
    from simclr_hpc.config import load_config
    from simclr_hpc.train.runner import run_stage

    one = run_stage("pretrain", load_config(config, ["run.name=oneproc"]))
    assert one["world_size"] == 1

    def mean_loss(path):
        return sum(json.loads(line)["loss"] for line in path.read_text().splitlines()) / result["steps"]

    two_nodes = mean_loss(run_dir / "metrics.jsonl")
    one_proc = mean_loss(base / "runs/tiny/pretrain/oneproc/metrics.jsonl")
    assert abs(two_nodes - one_proc) / one_proc < 0.10, (two_nodes, one_proc)


def test_array_of_four_with_parallelism_two_runs_after_its_pretrain_job(slurm_cluster, tmp_path):
    root = tmp_path / "runs"
    pre = submit_stage(
        "pretrain", _cfg(root, "arr", "base", 3), LaunchRequest(profile="local", gpus_per_node=0), target=STANDIN
    )
    recs = submit_array(
        "distill",
        [_cfg(root, "arr", f"pair{i}", 3) for i in range(4)],
        LaunchRequest(profile="local", gpus_per_node=0),
        parallelism=2,
        dependency=[pre.job_id],
        target=STANDIN,
    )
    array_id = recs[0].array_job_id
    assert [r.job_id for r in recs] == [f"{array_id}_{i}" for i in range(4)]
    script = (Path(recs[0].log_dir) / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2" in script and f"#SBATCH --dependency=afterok:{pre.job_id}" in script
    assert [launch.wait(r, poll_s=0.5, timeout_s=120) for r in recs] == ["COMPLETED"] * 4
    states = {r.job_id: r.state for r in launch.refresh(Registry(registry_path(root, "arr")))}
    assert set(states.values()) == {"COMPLETED"} and len(states) == 5
    ids = [pre.job_id, *[r.job_id for r in recs]]
    # slurmdbd records job ends asynchronously: wait until accounting has all five
    times = wait_until(
        lambda: (t := _sacct_times(ids)) and all(t.get(j, ("", "Unknown"))[1][:1].isdigit() for j in ids) and t,
        30,
        "accounting to record every end",
    )
    pre_end = times[pre.job_id][1]
    starts_ends = [times[r.job_id] for r in recs]
    assert all(start >= pre_end for start, _ in starts_ends), (pre_end, starts_ends)
    # at most 2 tasks at once: at every task's start, fewer than 2 others are running
    for start, _ in starts_ends:
        running = sum(1 for s, e in starts_ends if s < start < e)
        assert running < 2, starts_ends


def _steps(run_dir: Path) -> list[tuple[int, int]]:
    path = run_dir / "steps.log"
    if not path.exists():
        return []
    return [tuple(map(int, line.split())) for line in path.read_text().splitlines() if line.strip()]


def test_requeue_and_usr2_preemption_resume_without_repeating_a_step(slurm_cluster, tmp_path):
    root = tmp_path / "runs"
    steps = 16
    rec = submit_stage(
        "pretrain", _cfg(root, "pre", "long", steps), LaunchRequest(profile="local", gpus_per_node=0), target=STANDIN
    )
    run_dir = Path(rec.run_dir)
    wait_until(lambda: len(_steps(run_dir)) >= 3, 60, "3 steps before the requeue")
    subprocess.run(["scontrol", "requeue", rec.job_id], check=True)
    wait_until(lambda: any(r >= 1 for _, r in _steps(run_dir)), 90, "steps after the requeue")
    n_before = len(_steps(run_dir))
    # preemption: Slurm signals USR2; submitit's handler on rank 0 calls checkpoint() (resubmit only) and requeues
    subprocess.run(["scancel", "--signal=USR2", rec.job_id], check=True)
    wait_until(lambda: any(r >= 2 for _, r in _steps(run_dir)), 90, "steps after the preemption")
    assert launch.wait(rec, poll_s=0.5, timeout_s=120) == "COMPLETED"
    log = _steps(run_dir)
    assert [s for s, _ in log] == list(range(steps)), log  # every step once, in order: resumed, never repeated
    assert {r for _, r in log} == {0, 1, 2} and n_before < steps
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from"] > 0
    logs = Path(rec.stdout).read_text() + Path(rec.stderr).read_text()
    assert "this job is preempted" in logs and "Calling checkpoint method" in logs and "DUE TO JOB REQUEUE" in logs


def test_scancel_shows_cancelled_in_jobs_within_seconds(slurm_cluster, tmp_path):
    root = tmp_path / "runs"
    rec = submit_stage(
        "pretrain", _cfg(root, "can", "victim", 400), LaunchRequest(profile="local", gpus_per_node=0), target=STANDIN
    )
    wait_until(lambda: sl.job_state(rec.job_id) == "RUNNING", 60, "the job to run")
    subprocess.run(["scancel", rec.job_id], check=True)
    t0 = time.monotonic()
    wait_until(
        lambda: "CANCELLED" in cli("jobs", "--root", str(root), "--study", "can").stdout,
        15,
        "`simclr-hpc jobs` to show CANCELLED",
        poll_s=0.5,
    )
    assert time.monotonic() - t0 < 15


def test_cancel_command_cancels_a_whole_study(slurm_cluster, tmp_path):
    root = tmp_path / "runs"
    recs = submit_array(
        "finetune",
        [_cfg(root, "cs", f"r{i}", 400) for i in range(3)],
        LaunchRequest(profile="local", gpus_per_node=0),
        parallelism=1,
        target=STANDIN,
    )
    proc = cli("cancel", "--study", "cs", "--root", str(root))
    assert proc.returncode == 0 and "cancelled 3 job(s)" in proc.stdout
    wait_until(lambda: all(sl.job_state(r.job_id) == "CANCELLED" for r in recs), 30, "every task CANCELLED")


def test_requests_the_cluster_cannot_satisfy_are_exit_2_and_submit_nothing(slurm_cluster, tmp_path):
    root = tmp_path / "runs"
    failed = submit_stage(
        "pretrain",
        _cfg(root, "bad", "dies", 2, ["train.steps=1"]),
        LaunchRequest(profile="local", gpus_per_node=0),
        target="tests.launch.no_such_module:f",
    )
    wait_until(lambda: sl.job_state(failed.job_id) == "FAILED", 60, "the broken job to fail")
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    cases = [
        (["--partition", "gpu"], "no such partition"),
        (["--nodes", "3"], "has only 2 node(s)"),
        (["--gpus-per-node", "3"], "at most 2 GPU(s)"),
        (["--dependency", "afterok:999999"], "no such job"),
        (["--dependency", f"afterok:{failed.job_id}"], "ended FAILED"),
        (["--container", str(tmp_path / "missing.sif")], "image file not found"),
    ]
    for args, what in cases:
        proc = cli(
            "submit", "pretrain", "--profile", "local", "--set", f"run.root={root}", "--set", "run.study=bad2", *args
        )
        assert proc.returncode == 2 and what in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (
            args,
            proc.stderr,
        )
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert after == before and not (root / "bad2").exists()


def test_hostile_run_root_runs_as_data_and_executes_nothing(slurm_cluster, tmp_path):
    marker_dir = tmp_path
    root = tmp_path / "$(touch PWNED1) `touch PWNED2`; touch PWNED3 'q\" && x" / "runs"
    rec = submit_stage(
        "pretrain", _cfg(root, "evil", "r", 1), LaunchRequest(profile="local", gpus_per_node=0), target=STANDIN
    )
    assert launch.wait(rec, poll_s=0.5, timeout_s=60) == "COMPLETED"
    assert (root / "evil/pretrain/r/result.json").exists()
    for where in (marker_dir, REPO, Path(rec.log_dir)):
        assert not list(where.glob("PWNED*")), where


def test_container_image_runs_every_task_through_apptainer_exec(slurm_cluster, tmp_path, monkeypatch):
    # A stand-in `apptainer`: records its arguments, then runs the command after the image, as `apptainer exec` does.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "apptainer"
    shim.write_text(
        "#!/bin/bash\n"
        'echo "$@" >> "$APPTAINER_SHIM_LOG"\n'
        '[ "$1" = exec ] || exit 64; shift\n'
        'while [ "${1#--}" != "$1" ]; do if [ "$1" = --bind ]; then shift 2; else shift; fi; done\n'
        '[ -f "$1" ] || { echo "no image $1" >&2; exit 65; }; shift\n'
        'exec "$@"\n'
    )
    shim.chmod(0o755)
    image = tmp_path / "simclr.sif"
    image.write_bytes(b"not really an image")
    profile = tmp_path / "site.yaml"
    profile.write_text(
        f"partition: debug\ngpus_per_node: 1\ncpus_per_gpu: 1\ncontainer_python: {sys.executable}\nbinds: [/tmp]\n"
    )
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("APPTAINER_SHIM_LOG", str(tmp_path / "shim.log"))
    root = tmp_path / "runs"
    rec = submit_stage(
        "pretrain", _cfg(root, "ctr", "r", 1), LaunchRequest(profile=str(profile), container=str(image)), target=STANDIN
    )
    assert launch.wait(rec, poll_s=0.5, timeout_s=60) == "COMPLETED"
    calls = (tmp_path / "shim.log").read_text().splitlines()
    assert calls and calls[0].startswith(
        f"exec --nv --bind {root} --bind /tmp {image} {sys.executable} -u -m submitit.core._submit"
    )
