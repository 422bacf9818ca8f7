"""slurm/pretrain.sbatch and slurm/array.sbatch, submitted for real to the local test cluster (two nodes, fake GPUs).

A stand-in executable (``SIMCLR_CMD``) records what every task was given, so the tests compare the exact arguments and
rank environment the templates produce; a fake ``apptainer`` on PATH shows the container wrapping. The last tests run the
real ``simclr-hpc run`` on a tiny config through both templates.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "slurm" / "pretrain.sbatch"
ARRAY = REPO / "slurm" / "array.sbatch"
STANDIN = Path(__file__).with_name("sbatch_standin.py")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _standin(tmp_path: Path) -> tuple[Path, Path]:
    """(the stand-in simclr-hpc executable, the directory where its tasks write their records)."""
    out = tmp_path / "records"
    out.mkdir()
    cmd = _executable(tmp_path / "simclr-hpc-standin", f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    return cmd, out


def _records(out: Path) -> dict[str, dict]:
    return {p.stem.removeprefix("task-"): json.loads(p.read_text()) for p in sorted(out.glob("task-*.json"))}


def _sbatch(cluster, tmp_path: Path, flags: list[str], script: Path, args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--partition={cluster.partition}",
            "--time=5",
            f"--chdir={tmp_path}",
            f"--output={tmp_path}/%x-%j-%a.out",
            *flags,
            str(script),
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _wait(job_id: str, tasks: int = 1, timeout_s: float = 240.0) -> dict[str, tuple[str, str]]:
    """Poll sacct until ``tasks`` allocations of the job are in a terminal state; {JobID: (State, ExitCode)}."""
    deadline = time.monotonic() + timeout_s
    rows: dict[str, tuple[str, str]] = {}
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State,ExitCode"], capture_output=True, text=True
        ).stdout
        rows = {}
        for line in out.splitlines():
            job, state, code = line.split("|")
            rows[job] = (state.split()[0], code)
        if len(rows) == tasks and all(state in TERMINAL for state, _ in rows.values()):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s: {rows}")


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.out")))


def test_templates_parse_and_pass_shellcheck():
    for script in (PRETRAIN, ARRAY):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck); bash -n passed")
    proc = subprocess.run(["shellcheck", str(PRETRAIN), str(ARRAY)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slurm
def test_pretrain_sbatch_on_two_nodes_exports_rank_env_that_rendezvous_across_nodes(slurm_cluster, tmp_path):
    cmd, out = _standin(tmp_path)
    job = _sbatch(
        slurm_cluster,
        tmp_path,
        ["--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=1"],
        PRETRAIN,
        ["/abs/cfg.yaml", "--set", "train.steps=2"],
        {"SIMCLR_CMD": str(cmd), "STANDIN_OUT": str(out), "STANDIN_RENDEZVOUS": "1", "SIMCLR_IMAGE": ""},
    )
    assert _wait(job) == {job: ("COMPLETED", "0:0")}, _logs(tmp_path)
    records = _records(out)
    assert sorted(records) == ["0", "1", "2", "3"], _logs(tmp_path)
    port = str(20000 + int(job) % 10000)
    for rank, record in records.items():
        assert record["argv"] == ["run", "pretrain", "-c", "/abs/cfg.yaml", "--set", "train.steps=2"]
        env = record["env"]
        assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == (rank, "4", "2")
        assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("node1", port)
        assert record["all_reduce_of_ranks"] == 0 + 1 + 2 + 3
    by_host = {}
    for record in records.values():
        by_host.setdefault(record["host"], []).append(record["env"]["LOCAL_RANK"])
    assert {host: sorted(ranks) for host, ranks in by_host.items()} == {"node1": ["0", "1"], "node2": ["0", "1"]}


@pytest.mark.slurm
def test_pretrain_sbatch_runs_every_task_in_apptainer_with_nv_when_the_image_exists(slurm_cluster, tmp_path):
    cmd, out = _standin(tmp_path)
    image = tmp_path / "simclr.sif"
    image.write_bytes(b"not really an image")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(
        bin_dir / "apptainer",
        """#!/bin/bash
printf '%s\\n' "$@" > "$STANDIN_OUT/apptainer-$SLURM_PROCID.args"
shift
while [[ $1 == --* ]]; do if [[ $1 == --bind ]]; then shift 2; else shift; fi; done
shift
exec "$@"
""",
    )
    job = _sbatch(
        slurm_cluster,
        tmp_path,
        ["--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=1"],
        PRETRAIN,
        ["/abs/cfg.yaml"],
        {
            "SIMCLR_CMD": str(cmd),
            "STANDIN_OUT": str(out),
            "SIMCLR_IMAGE": str(image),
            "SIMCLR_BINDS": "/scratch,/data:/data:ro",
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
    )
    assert _wait(job) == {job: ("COMPLETED", "0:0")}, _logs(tmp_path)
    for rank in ("0", "1"):
        args = (out / f"apptainer-{rank}.args").read_text().splitlines()
        assert args == [
            "exec",
            "--nv",
            "--bind",
            "/scratch,/data:/data:ro",
            str(image),
            str(cmd),
            "run",
            "pretrain",
            "-c",
            "/abs/cfg.yaml",
        ]
    assert sorted(_records(out)) == ["0", "1"]


@pytest.mark.slurm
def test_pretrain_sbatch_with_a_missing_image_fails_with_exit_2_and_says_so(slurm_cluster, tmp_path):
    cmd, out = _standin(tmp_path)
    job = _sbatch(
        slurm_cluster,
        tmp_path,
        ["--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=1"],
        PRETRAIN,
        ["/abs/cfg.yaml"],
        {"SIMCLR_CMD": str(cmd), "STANDIN_OUT": str(out), "SIMCLR_IMAGE": str(tmp_path / "missing.sif")},
    )
    assert _wait(job) == {job: ("FAILED", "2:0")}
    assert "missing.sif does not exist" in _logs(tmp_path)
    assert _records(out) == {}


@pytest.mark.slurm
def test_array_sbatch_runs_one_manifest_line_per_index_and_never_evaluates_it(slurm_cluster, tmp_path):
    cmd, out = _standin(tmp_path)
    odd_dir = tmp_path / "a dir with $(touch PWNED) and `id` and ; spaces"
    odd_dir.mkdir()
    configs = [tmp_path / "finetune.yaml", odd_dir / "distill $HOME.yaml", tmp_path / "transfer.yaml"]
    for config in configs:
        config.write_text("run: {}\n")
    manifest = tmp_path / "runs.tsv"
    manifest.write_text(
        "".join(f"{stage}\t{config}\n" for stage, config in zip(("finetune", "distill", "transfer"), configs))
    )
    job = _sbatch(
        slurm_cluster,
        tmp_path,
        ["--array=0-2", "--cpus-per-task=1"],
        ARRAY,
        [str(manifest)],
        {"SIMCLR_CMD": str(cmd), "STANDIN_OUT": str(out), "SIMCLR_IMAGE": ""},
    )
    states = _wait(job, tasks=3)
    assert states == {f"{job}_{i}": ("COMPLETED", "0:0") for i in range(3)}, _logs(tmp_path)
    records = _records(out)
    assert {index: record["argv"] for index, record in records.items()} == {
        "0": ["run", "finetune", "-c", str(configs[0])],
        "1": ["run", "distill", "-c", str(configs[1])],
        "2": ["run", "transfer", "-c", str(configs[2])],
    }
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()


@pytest.mark.slurm
def test_array_sbatch_rejects_a_line_that_is_not_stage_tab_absolute_config(slurm_cluster, tmp_path):
    cmd, out = _standin(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text("run: {}\n")
    manifest = tmp_path / "runs.tsv"
    manifest.write_text(f"rm -rf\t{config}\nfinetune\trelative.yaml\n")
    job = _sbatch(
        slurm_cluster,
        tmp_path,
        ["--array=0-2", "--cpus-per-task=1"],
        ARRAY,
        [str(manifest)],
        {"SIMCLR_CMD": str(cmd), "STANDIN_OUT": str(out), "SIMCLR_IMAGE": ""},
    )
    assert _wait(job, tasks=3) == {f"{job}_{i}": ("FAILED", "2:0") for i in range(3)}
    logs = _logs(tmp_path)
    assert "line 1: stage 'rm -rf' is not one of" in logs
    assert "line 2: expected STAGE<TAB>/abs/path/config.yaml" in logs
    assert "has no line 3 for array index 2" in logs
    assert _records(out) == {}


def _tiny_config(tmp_path: Path, shards: Path, name: str) -> Path:
    """A pretraining config small enough for two CPU tasks on two shared cores: 2 steps of a 1/8-width ResNet-18."""
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"run: {{root: {tmp_path / 'runs'}, study: sbatch, name: {name}}}\n"
        f"data: {{shards: {shards}, image_size: 16, num_workers: 0}}\n"
        "model: {width: 0.125, proj_dim: 16}\n"
        "train: {steps: 2, global_batch: 8, ckpt_every_steps: 2, log_every_steps: 1}\n"
    )
    return config


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory) -> Path:
    from simclr_hpc.data.shards import write_shards

    out = tmp_path_factory.mktemp("shards") / "shapes3"
    write_shards("shapes:3", out, shard_size=50, seed=0)
    return out


def _venv_path() -> dict[str, str]:
    return {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "SIMCLR_IMAGE": "", "SIMCLR_CMD": ""}


@pytest.mark.slurm
@pytest.mark.slow
def test_pretrain_sbatch_runs_real_simclr_hpc_pretrain_on_two_nodes(slurm_cluster, tmp_path, tiny_shards):
    config = _tiny_config(tmp_path, tiny_shards, "two-nodes")
    job = _sbatch(
        slurm_cluster,
        tmp_path,
        ["--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=1"],
        PRETRAIN,
        [str(config), "--set", "train.steps=2"],
        _venv_path(),
    )
    assert _wait(job, timeout_s=400) == {job: ("COMPLETED", "0:0")}, _logs(tmp_path)
    assert (tmp_path / "runs" / "sbatch" / "pretrain" / "two-nodes" / "result.json").is_file(), _logs(tmp_path)


@pytest.mark.slurm
@pytest.mark.slow
def test_array_sbatch_runs_real_simclr_hpc_from_a_manifest_written_by_the_launcher(
    slurm_cluster, tmp_path, tiny_shards
):
    from simclr_hpc.config import load_config
    from simclr_hpc.launch.submit import write_manifest

    names = ["seed-a", "seed-b", "seed-c"]
    cfgs = [load_config(_tiny_config(tmp_path, tiny_shards, name)) for name in names]
    manifest = write_manifest("pretrain", cfgs, tmp_path / "pretrain.tsv")
    assert len(manifest.read_text().splitlines()) == 3
    job = _sbatch(slurm_cluster, tmp_path, ["--array=0-2", "--cpus-per-task=1"], ARRAY, [str(manifest)], _venv_path())
    assert _wait(job, tasks=3, timeout_s=400) == {f"{job}_{i}": ("COMPLETED", "0:0") for i in range(3)}, _logs(tmp_path)
    for name in names:
        assert (tmp_path / "runs" / "sbatch" / "pretrain" / name / "result.json").is_file(), _logs(tmp_path)
