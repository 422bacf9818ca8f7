"""Jobs inside the real image (``make image``: podman + runc) on the real local Slurm cluster (node1, node2).

* ``simclr-hpc doctor --offline`` runs inside the image;
* ``simclr-hpc submit pretrain --nodes 2 --container IMAGE`` with a podman site profile: every task is a container
  (podman's event log shows one per node, labelled with the job id), world size 2 across node1 and node2;
* inside the image there is no ``scontrol`` (what made requeue from a container fail), and a ``--time=2`` job still
  saves at Slurm's signal, is requeued by the host-side batch script and ends bitwise equal to an uninterrupted run of
  the same image.

Marker ``container``: skipped, with the reason, when the image does not exist (``make container-test`` builds it first
and sets SIMCLR_REQUIRE_IMAGE=1, which turns the skip into a failure).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import tomllib

from simclr_hpc.config import load_config
from simclr_hpc.launch import LaunchRequest, submit_stage
from simclr_hpc.launch import slurm as sl
from simclr_hpc.launch.container import podman_image_exists
from tests.launch.helpers import cli, wait_until
from tests.preemption.helpers import (
    HOLD_AT,
    TARGET,
    TIME_MIN,
    check_requeued_at_the_limit,
    wait_done,
    write_config,
    write_profile,
)

pytestmark = [pytest.mark.container, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE = os.environ.get("SIMCLR_TEST_IMAGE", f"localhost/simclr-hpc:{VERSION}")
CONTAINERS_CONF = os.environ.get("CONTAINERS_CONF", str(REPO / "slurm" / "testing" / "containers.conf"))
# The tests' own modules (the paced runner) inside the container; the image's simclr_hpc stays the one that runs.
TESTS_IN_IMAGE = "/opt/simclr-tests"


@pytest.fixture(scope="module")
def image() -> str:
    os.environ.setdefault("CONTAINERS_CONF", CONTAINERS_CONF)
    if not podman_image_exists(IMAGE):
        reason = f"no podman image {IMAGE}: build it with `make image` (or run `make container-test`)"
        if os.environ.get("SIMCLR_REQUIRE_IMAGE") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return IMAGE


@pytest.fixture(autouse=True)
def _job_env(monkeypatch):
    # sbatch exports this environment to the batch script, whose podman needs this machine's settings.
    monkeypatch.setenv("CONTAINERS_CONF", CONTAINERS_CONF)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def _containers_of(job_id: str) -> list[str]:
    """Containers started for this Slurm job (podman's event log: our launcher labels each with the job id)."""
    out = _podman(
        "events",
        "--stream=false",
        "--since",
        "30m",
        "--filter",
        "event=start",
        "--filter",
        f"label=simclr-hpc.job={job_id}",
        "--format",
        "{{.Image}}",
    ).stdout
    return out.split()


def _profile(path: Path, image: str, base: Path, **fields) -> Path:
    return write_profile(path, container_launcher="podman", image=image, binds=[str(base)], **fields)


def test_doctor_offline_runs_inside_the_image(image, tmp_path):
    proc = _podman("run", "--rm", image, "doctor", "--offline", "--run-root", "/tmp/selftest")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("doctor:") and " 0 fail" in lines[-1], proc.stdout
    assert any(line.split()[:2] == ["ok", "python"] and "/opt/venv/bin/python" in line for line in lines), proc.stdout
    assert any(line.split()[:2] == ["ok", "apptainer"] and "podman container" in line for line in lines), proc.stdout
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    assert any(line.split()[:3] == ["ok", "torch", pins["torch"]] for line in lines), proc.stdout


def test_the_image_has_no_slurm_client(image):
    proc = _podman("run", "--rm", "--entrypoint=", image, "sh", "-c", "command -v scontrol sbatch || echo none")
    assert proc.stdout.strip() == "none", proc.stdout


def test_two_node_pretrain_runs_in_the_image_on_node1_and_node2(slurm_cluster, image, tiny_shards, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"run: {{root: {tmp_path}/runs, study: image, name: twonode}}\n"
        f"data: {{shards: {tiny_shards}, image_size: 16, num_workers: 0}}\n"
        "model: {backbone: resnet18, width: 0.125, proj_dim: 16}\n"
        "train: {steps: 4, global_batch: 16, ckpt_every_steps: 2, log_every_steps: 1, eval_batch_per_device: 64}\n"
        "optim: {warmup_steps: 1}\n"
    )
    profile = _profile(tmp_path / "podman.yaml", image, tiny_shards.parent)
    args = [
        "submit",
        "pretrain",
        "-c",
        str(config),
        "--nodes",
        "2",
        "--gpus-per-node",
        "0",
        "--profile",
        str(profile),
        "--container",
        image,
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dry = cli(*args, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f" {image} python -u -m submitit.core._submit " in dry.stdout and "podman run --rm" in dry.stdout
    proc = cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split("job ")[1].split()[0]
    run_dir = tmp_path / "runs/image/pretrain/twonode"
    wait_until(lambda: sl.job_state(job_id) in sl.TERMINAL_STATES, 400, f"job {job_id} to end", poll_s=1)
    logs = "".join(p.read_text() for p in (run_dir / "slurm").glob("*_log.*"))
    assert sl.job_state(job_id) == "COMPLETED", logs[-4000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and sorted(result["hostnames"]) == ["node1", "node2"]
    assert result["steps"] == 4
    assert _containers_of(job_id) == [image, image]  # one container per task, both from the image


def test_time_limit_in_the_image_saves_at_slurms_signal_requeues_from_the_host_and_ends_bitwise_equal(
    slurm_cluster, image, tiny_shards, tmp_path, monkeypatch
):
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the image's own simclr_hpc runs, not this checkout
    monkeypatch.setenv("SIMCLR_TEST_HOLD_AT", str(HOLD_AT))
    config = write_config(tmp_path, tiny_shards, "boxed")
    cfg = load_config(config)
    # Only the tests' runner module is bound in (read-only), on the container's PYTHONPATH.
    profile = _profile(
        tmp_path / "limit.yaml",
        image,
        tiny_shards.parent,
        container_args=[f"--volume={REPO / 'tests'}:{TESTS_IN_IMAGE}/tests:ro", f"--env=PYTHONPATH={TESTS_IN_IMAGE}"],
    )
    rec = submit_stage(
        "pretrain", cfg, LaunchRequest(profile=str(profile), gpus_per_node=0, time=str(TIME_MIN)), target=TARGET
    )

    # The uninterrupted reference in the same image, meanwhile (no Slurm, no hold).
    ref = _podman(
        "run",
        "--rm",
        "--network=host",
        f"--volume={tmp_path}:{tmp_path}",
        f"--volume={tiny_shards.parent}:{tiny_shards.parent}",
        "--env=OMP_NUM_THREADS=1",
        "--user=0:0",
        image,
        "run",
        "pretrain",
        "-c",
        str(config),
        "--set",
        "run.name=ref",
        timeout=400,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    n_restarts = wait_done(rec)
    check_requeued_at_the_limit(rec, Path(rec.run_dir), cfg.run_dir("pretrain").with_name("ref"), n_restarts)
    assert len(_containers_of(rec.job_id)) == n_restarts + 1  # every attempt ran in the image
