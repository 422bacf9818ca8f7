"""``--dry-run`` renders the exact sbatch script without Slurm; bad and hostile input never reaches a script."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from simclr_hpc.config import load_config
from simclr_hpc.launch import LaunchError, LaunchRequest, parse_dependency, render_array, render_stage, write_manifest
from tests.launch.helpers import cli, no_slurm_env


@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    env = no_slurm_env(tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    return env


def _sbatch_lines(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --") :].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def test_dry_run_of_four_nodes_without_slurm_prints_nodes_tasks_signal_and_container(tmp_path, tiny_shards):
    image = tmp_path / "simclr.sif"
    image.write_bytes(b"fake image")
    root = tmp_path / "runs"
    proc = cli(
        "submit",
        "pretrain",
        "--nodes",
        "4",
        "--gpus-per-node",
        "4",
        "--dry-run",
        "--container",
        str(image),
        "--time",
        "2-00:00:00",
        "--set",
        f"run.root={root}",
        "--set",
        f"data.shards={tiny_shards}",
        env=no_slurm_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    flags = _sbatch_lines(proc.stdout)
    assert flags["nodes"] == "4" and flags["ntasks-per-node"] == "4" and flags["gpus-per-node"] == "4"
    assert flags["signal"].startswith("USR2@") and "requeue" in flags and flags["time"] == str(2 * 24 * 60)
    assert flags["output"].endswith("%j_0_log.out")
    srun = next(line for line in proc.stdout.splitlines() if line.startswith("srun "))
    words = shlex.split(srun)
    i = words.index("apptainer")
    assert words[i : i + 3] == ["apptainer", "exec", "--nv"] and str(image) in words and f"{root}" in words
    assert words[-4:] == ["-u", "-m", "submitit.core._submit", f"{root}/adhoc/pretrain/default/slurm"]
    assert not root.exists(), "a dry run must write nothing"


def test_cpu_only_request_runs_one_task_per_node_and_asks_for_no_gpu(no_slurm, tmp_path, tiny_shards):
    cfg = load_config(None, [f"run.root={tmp_path}", f"data.shards={tiny_shards}"])
    script = render_stage("pretrain", cfg, LaunchRequest(nodes=2, gpus_per_node=0))
    flags = _sbatch_lines(script)
    assert flags["ntasks-per-node"] == "1" and "gpus-per-node" not in flags and "--nv" not in script


def test_profile_values_and_overrides_reach_the_script(no_slurm, tmp_path, tiny_shards):
    cfg = load_config(None, [f"run.root={tmp_path}", f"data.shards={tiny_shards}"])
    script = render_stage(
        "finetune",
        cfg,
        LaunchRequest(nodes=2, profile="example-site", qos="high", container="none", partition="gpu2"),
        dependency="afterok:7:8",
    )
    flags = _sbatch_lines(script)
    assert flags["partition"] == "gpu2" and flags["qos"] == "high" and flags["account"] == "my-lab"
    assert flags["constraint"] == "a100&ib" and flags["mem"] == "480GB" and flags["cpus-per-task"] == "16"
    assert flags["dependency"] == "afterok:7:8" and flags["mail-type"] == "END,FAIL"
    assert "export NCCL_IB_HCA=mlx5" in script and "module load apptainer/1.3" in script


def test_sweep_larger_than_max_array_size_is_split_and_chained(no_slurm, tmp_path, tiny_shards):
    prof = tmp_path / "tiny-site.yaml"
    prof.write_text("max_array_size: 3\narray_parallelism: 2\ngpus_per_node: 0\n")
    cfgs = [
        load_config(None, [f"run.root={tmp_path}", f"run.name=r{i}", f"data.shards={tiny_shards}"]) for i in range(7)
    ]
    scripts = render_array("distill", cfgs, LaunchRequest(profile=str(prof)), dependency=["12"])
    arrays = [_sbatch_lines(s)["array"] for s in scripts]
    assert arrays == ["0-2%2", "0-2%2", "0-0%1"]
    deps = [_sbatch_lines(s)["dependency"] for s in scripts]
    assert deps[0] == "afterok:12" and deps[1] == "afterok:12,afterany:<job id of array 0>"
    assert deps[2] == "afterok:12,afterany:<job id of array 1>"  # each array waits for the one before it
    assert "%A_%a_0_log.out" in scripts[0]


def test_duplicate_run_names_in_a_sweep_are_refused(no_slurm, tmp_path):
    cfgs = [load_config(None, [f"run.root={tmp_path}", "run.name=same"]) for _ in range(2)]
    with pytest.raises(LaunchError, match="both write"):
        render_array("transfer", cfgs, LaunchRequest())


@pytest.mark.parametrize(
    "text,ids",
    [
        ("afterok:12", ["12"]),
        ("afterok:12:13_2", ["12", "13_2"]),
        ("14", ["14"]),
        (["afterok:1", "2,3"], ["1", "2", "3"]),
    ],
)
def test_dependency_spellings(text, ids):
    assert parse_dependency(text) == ids


@pytest.mark.parametrize("text", ["afterany:12", "afterok:12;id", "afterok:$(id)", "12 13", "afterok:", "singleton"])
def test_bad_dependencies_are_refused(text):
    with pytest.raises(LaunchError):
        parse_dependency(text)


HOSTILE = [
    "q'uote",
    'dq"uote',
    "$(touch PWNED)",
    "`touch PWNED`",
    "a;touch PWNED",
    "sp ace",
    "amp&&touch PWNED",
    "${HOME}",
    "back\\slash",
    "glob*?[x]",
    "--nodes=99",
    "-N9",
]


@pytest.mark.parametrize("piece", HOSTILE)
def test_hostile_run_root_is_quoted_and_stays_one_word(no_slurm, tmp_path, piece, tiny_shards):
    root = tmp_path / piece / "runs"
    cfg = load_config(None, [f"run.root={root}", f"data.shards={tiny_shards}"])
    script = render_stage("pretrain", cfg, LaunchRequest(nodes=2, gpus_per_node=1))
    folder = f"{root}/adhoc/pretrain/default/slurm"
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert shlex.split(srun)[-1] == folder
    assert _sbatch_lines(script)["output"] == f"{folder}/%j_0_log.out"
    assert sum(line.startswith("#SBATCH") for line in script.splitlines()) == len(_sbatch_lines(script))
    # bash parses the script without running anything: no syntax error from a stray quote
    assert subprocess.run(["/bin/bash", "-n"], input=script, text=True).returncode == 0
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


@pytest.mark.parametrize(
    "args,what",
    [
        (["--set", "run.root=/tmp/%j"], "'%'"),
        (["--set", "run.name=../../etc"], "run.name"),
        (["--set", "run.name=a;touch PWNED"], "run.name"),
        (["--set", "run.study=$(id)"], "run.study"),
        (["--partition", "gpu;touch PWNED"], "partition"),
        (["--account", "`id`"], "account"),
        (["--constraint", "a100 && touch PWNED"], "constraint"),
        (["--container", "/nope/missing.sif"], "image file not found"),
        (["--time", "forever"], "time"),
        (["--dependency", "afterok:1;touch PWNED"], "not a Slurm job id"),
        (["--profile", "../../../etc/passwd"], "file not found"),
        (["--profile", "nosuchsite"], "no nosuchsite.yaml"),
        (["--nodes", "2", "--executor", "local"], "this machine only"),
        (["--executor", "debug"], "--executor 'debug': use slurm or local or inprocess"),
    ],
)
def test_bad_or_hostile_submit_input_is_one_line_and_exit_2(tmp_path, args, what):
    proc = cli(
        "submit",
        "pretrain",
        "--dry-run",
        "--set",
        f"run.root={tmp_path}/runs",
        *args,
        env=no_slurm_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and what in lines[0], proc.stderr
    assert proc.stdout == "" and not (tmp_path / "runs").exists() and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("root", ["/tmp/a\nb", "/tmp/a\r#SBATCH --nodes=99", "/tmp/\x00x", "/tmp/tab\there"])
def test_control_characters_in_paths_are_refused_before_anything_is_written(tmp_path, root):
    config = tmp_path / "evil.yaml"
    config.write_text(yaml.safe_dump({"run": {"root": root}}))
    proc = cli("submit", "pretrain", "--dry-run", "-c", str(config), env=no_slurm_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "control character" in proc.stderr
    assert proc.stdout == ""


def test_submit_without_slurm_and_without_dry_run_says_so(tmp_path):
    proc = cli("submit", "pretrain", "--set", f"run.root={tmp_path}/runs", env=no_slurm_env(tmp_path))
    assert proc.returncode == 2 and "sbatch not found" in proc.stderr and not (tmp_path / "runs").exists()


def test_manifest_has_one_stage_tab_config_line_per_array_index(tmp_path):
    cfgs = [load_config(None, [f"run.root={tmp_path}/runs", f"run.name=t{i}", f"run.seed={i}"]) for i in range(3)]
    (tmp_path / "m").mkdir()  # a manifest's directory must exist: write_manifest creates none (issue 14)
    path = write_manifest("transfer", cfgs, tmp_path / "m" / "transfer.txt")
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        stage, config = line.split("\t")
        assert stage == "transfer" and Path(config).is_absolute()
        back = load_config(config)
        assert back.run.name == f"t{i}" and back.run.seed == i and back.run.root == f"{tmp_path}/runs"


def test_dry_run_checks_what_the_run_reads_as_the_submission_does(tmp_path, tiny_shards):
    """``submit finetune --dry-run`` without an encoder fails (exit 2, one line) instead of printing a script."""
    for dry in (["--dry-run"], []):
        proc = cli(
            "submit",
            "finetune",
            *dry,
            "--set",
            f"run.root={tmp_path}/runs",
            "--set",
            f"data.shards={tiny_shards}",
            env=no_slurm_env(tmp_path),
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
        assert "finetune.encoder" in proc.stderr or "sbatch not found" in proc.stderr
    assert (
        "finetune.encoder"
        in cli(
            "submit",
            "finetune",
            "--dry-run",
            "--set",
            f"data.shards={tiny_shards}",
            env=no_slurm_env(tmp_path),
            cwd=tmp_path,
        ).stderr
    )
