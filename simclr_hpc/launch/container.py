"""How every task's Python runs inside the site's container runtime: the command that wraps submitit's ``python``.

Two launchers, chosen by the site profile's ``container_launcher``:

* ``apptainer`` (the default, what HPC sites run): ``apptainer exec [--nv] --bind ... IMAGE.sif python``. Apptainer
  passes the host environment in, shares the host's PID, network and IPC namespaces and runs as the calling user.
* ``podman`` (an OCI runtime, for sites and machines without Apptainer): ``podman run`` with the same semantics made
  explicit: host network, PID, IPC and UTS namespaces (rendezvous, signals and hostnames behave as in a bare job), the
  calling user's uid:gid, the binds as volumes, and the job's environment passed by name (podman passes none by
  default). GPUs through CDI (``--device nvidia.com/gpu=all``, the NVIDIA container toolkit's spec).

Neither needs Slurm inside the image: a job that must be requeued asks the host side (see ``launch/task.py``).
Every word is shell-quoted but the job label (``JOB_LABEL``). No torch import here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from simclr_hpc.launch.errors import LaunchError

LAUNCHERS = ("apptainer", "podman")

# What a task needs from the host environment inside podman (apptainer passes everything): Slurm's and submitit's
# variables (the rank environment is derived from them inside), ours, and the usual runtime knobs. Podman reads a
# trailing "*" as "every host variable with this prefix".
PODMAN_ENV = (
    "SLURM_*",
    "SUBMITIT_*",
    "SIMCLR_*",
    "NCCL_*",
    "TORCH_*",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
)


# Left unquoted on purpose (a fixed text): the batch script expands the job id, so `podman ps --filter
# label=simclr-hpc.job=ID` finds a job's containers (for instance ones a SIGKILLed `podman run` left to conmon).
JOB_LABEL = "--label=simclr-hpc.job=$SLURM_JOB_ID"


def _volume(spec: str) -> str:
    """An Apptainer bind ``SRC[:DST[:OPTS]]`` as a podman volume ``SRC:DST[:OPTS]`` (podman needs the destination)."""
    parts = spec.split(":")
    if len(parts) == 1:
        parts.append(parts[0])
    return ":".join(parts)


def launcher_words(profile, image: str, run_root: Path) -> list[str]:
    """The container command before the Python command: ``apptainer exec ... IMAGE`` or ``podman run ... IMAGE``.

    The run root is always bound, so the task sees submitit's pickles and writes its run directory on the host's file
    system; ``profile.container_args`` are extra words for the runtime (``--cleanenv``, ``--security-opt ...``).
    """
    binds = list(dict.fromkeys([str(run_root), *profile.binds]))
    gpus = profile.gpus_per_node > 0
    if profile.container_launcher == "apptainer":
        words = ["apptainer", "exec", *(["--nv"] if gpus else [])]
        for spec in binds:
            words += ["--bind", spec]
        return [*words, *profile.container_args, image]
    words = [
        "podman",
        "run",
        "--rm",
        "--network=host",
        "--pid=host",
        "--ipc=host",
        "--uts=host",
        f"--user={os.getuid()}:{os.getgid()}",
        "--entrypoint=",
        JOB_LABEL,
    ]
    if gpus:
        words += ["--device=nvidia.com/gpu=all", "--security-opt=label=disable"]
    for spec in binds:
        words.append(f"--volume={_volume(spec)}")
    for name in dict.fromkeys([*PODMAN_ENV, *profile.env]):
        words.append(f"--env={name}")
    return [*words, *profile.container_args, image]


def container_python(profile, image: str, run_root: Path) -> str:
    """The shell command that starts Python in the image: launcher words, then ``profile.container_python``."""
    words = launcher_words(profile, image, run_root) + shlex.split(profile.container_python)
    return " ".join(w if w == JOB_LABEL else shlex.quote(w) for w in words)


def resolve_image(profile, check: bool = True) -> str:
    """The profile's image as the launcher names it: an absolute ``.sif`` path for Apptainer, an image reference for
    podman. ``check``: the image must exist (a file; an image in podman's storage). Raises LaunchError if not."""
    if profile.container_launcher == "apptainer":
        path = Path(profile.image).expanduser().absolute()
        if check and not path.is_file():
            raise LaunchError(
                f"--container {profile.image}: image file not found (build it with "
                f"`apptainer build simclr-hpc.sif apptainer.def`, or give the right path)"
            )
        if check and path.stat().st_size == 0:
            raise LaunchError(
                f"--container {profile.image}: the image file is empty (an interrupted build or copy); "
                "build it again with `apptainer build simclr-hpc.sif apptainer.def`"
            )
        return str(path)
    if check and not podman_image_exists(profile.image):
        raise LaunchError(
            f"--container {profile.image}: podman has no such image (build it with `make image`, "
            f"or give the name `podman images` shows)"
        )
    return profile.image


def podman_image_exists(image: str) -> bool:
    """``podman image exists IMAGE`` (False without podman)."""
    if not shutil.which("podman"):
        return False
    return subprocess.run(["podman", "image", "exists", image], capture_output=True, timeout=60).returncode == 0
