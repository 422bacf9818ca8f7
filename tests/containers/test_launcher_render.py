"""The container launcher a site profile selects, as rendered into submitit's sbatch script (no Slurm, no runtime)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.jobspec import LaunchRequest, build_job_spec, render_sbatch
from simclr_hpc.launch.profile import Profile, load_profile


def _srun_words(script: str) -> list[str]:
    line = next(line for line in script.splitlines() if line.startswith("srun "))
    return shlex.split(line)


def _profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return str(path)


def test_apptainer_stays_the_default_with_nv_and_binds(tmp_path):
    image = tmp_path / "simclr.sif"
    image.write_bytes(b"x")
    profile = _profile(tmp_path, f"gpus_per_node: 4\nimage: {image}\nbinds: [/scratch, '/data:/data:ro']\n")
    plan = build_job_spec("pretrain", LaunchRequest(profile=profile), tmp_path / "runs", "j")
    words = _srun_words(render_sbatch(plan, tmp_path / "f"))
    start = words.index("apptainer")
    assert words[start : start + 9] == [
        "apptainer",
        "exec",
        "--nv",
        "--bind",
        str(tmp_path / "runs"),
        "--bind",
        "/scratch",
        "--bind",
        "/data:/data:ro",
    ]
    assert words[start + 9 : start + 11] == [str(image), "python"]


def test_podman_runs_each_task_with_host_namespaces_user_binds_env_and_cdi_gpus(tmp_path):
    profile = _profile(
        tmp_path,
        "container_launcher: podman\nimage: localhost/simclr-hpc:0.1.0\ngpus_per_node: 2\n"
        "binds: [/scratch]\nenv: {NCCL_SOCKET_IFNAME: ib0}\n"
        "container_args: ['--security-opt=seccomp=unconfined']\n",
    )
    plan = build_job_spec("pretrain", LaunchRequest(profile=profile), tmp_path / "runs", "j", check_image=False)
    script = render_sbatch(plan, tmp_path / "f")
    assert "--label=simclr-hpc.job=$SLURM_JOB_ID " in script  # expanded by the batch script, on purpose
    words = _srun_words(script)
    run = words[words.index("podman") :]
    assert run[:3] == ["podman", "run", "--rm"]
    for flag in (
        "--network=host",
        "--pid=host",
        "--ipc=host",
        "--uts=host",
        f"--user={os.getuid()}:{os.getgid()}",
        "--entrypoint=",
        "--device=nvidia.com/gpu=all",
        f"--volume={tmp_path / 'runs'}:{tmp_path / 'runs'}",
        "--volume=/scratch:/scratch",
        "--env=SLURM_*",
        "--env=SUBMITIT_*",
        "--env=SIMCLR_*",
        "--env=NCCL_SOCKET_IFNAME",
        "--security-opt=seccomp=unconfined",
    ):
        assert flag in run, flag
    assert run.count("--env=NCCL_SOCKET_IFNAME") == 1
    assert not any(word.startswith(("--env=PATH", "--env=PYTHONPATH")) for word in run)
    tail = run[run.index("localhost/simclr-hpc:0.1.0") :]
    assert tail[:5] == ["localhost/simclr-hpc:0.1.0", "python", "-u", "-m", "submitit.core._submit"]


def test_podman_without_gpus_passes_no_device_and_the_script_requeues_from_the_host(tmp_path):
    profile = _profile(tmp_path, "container_launcher: podman\nimage: img:1\ngpus_per_node: 0\n")
    script = render_sbatch(
        build_job_spec("pretrain", LaunchRequest(profile=profile), tmp_path / "runs", "j", check_image=False),
        tmp_path / "f",
    )
    assert "--device=" not in script
    setup, teardown = script.split("# command")[0], script.split("# teardown")[1]
    assert f'export SIMCLR_HPC_REQUEUE_FILE={tmp_path / "runs" / ".requeue"}/"job-$SLURM_JOB_ID"' in setup
    assert 'scontrol requeue "$SLURM_JOB_ID"' in teardown and '[ -e "$SIMCLR_HPC_REQUEUE_FILE" ]' in teardown


def test_a_missing_podman_image_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman at all: the image cannot be found either
    profile = _profile(tmp_path, "container_launcher: podman\nimage: localhost/nope:1\n")
    with pytest.raises(LaunchError, match=r"podman has no such image .*make image"):
        build_job_spec("pretrain", LaunchRequest(profile=profile), tmp_path / "runs", "j")


@pytest.mark.parametrize(
    "text, field",
    [
        ("container_launcher: docker\n", "container_launcher"),
        ('container_args: ["--x\\nrm -rf /"]\n', "container_args"),
    ],
)
def test_bad_container_fields_name_the_field(tmp_path, text, field):
    with pytest.raises(LaunchError, match=field):
        load_profile(_profile(tmp_path, text))
    assert Profile().container_launcher == "apptainer"
