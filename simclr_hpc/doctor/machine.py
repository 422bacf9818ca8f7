"""What this machine has: the interpreter, the packages a run needs, GPUs and NCCL (torch imported only in those two
checks), the Slurm client commands and partitions, and Apptainer with the image a job runs in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from simclr_hpc.doctor.check import Check, Status

MIN_PYTHON = (3, 10)
# Package -> whether a run cannot start without it. DeepSpeed is needed only with dist.zero_stage > 0.
KEY_PACKAGES: dict[str, bool] = {
    "torch": True,
    "torchvision": True,
    "accelerate": True,
    "deepspeed": False,
    "submitit": True,
    "webdataset": True,
}
SLURM_COMMANDS = ("sbatch", "squeue", "sacct")
INSTALL_FIX = "pip install -c constraints.txt -r requirements.txt (or use the container image, docs/containers.md)"
SUBPROCESS_TIMEOUT_S = 15


def check_python() -> list[Check]:
    """The interpreter's version against ``requires-python``."""
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] < MIN_PYTHON:
        return [
            Check("python", "fail", f"Python {version} at {sys.executable}", "use Python >= 3.10 (the image has 3.11)")
        ]
    return [Check("python", "ok", f"Python {version} at {sys.executable}")]


def check_packages() -> list[Check]:
    """Installed versions of the packages a run depends on, from their metadata (nothing is imported)."""
    checks = []
    for package, required in KEY_PACKAGES.items():
        try:
            checks.append(Check(package, "ok", metadata.version(package)))
        except metadata.PackageNotFoundError:
            status: Status = "fail" if required else "warn"
            why = "" if required else " (needed only for dist.zero_stage > 0)"
            checks.append(Check(package, status, f"not installed{why}", INSTALL_FIX))
    return checks


def check_gpus() -> list[Check]:
    """CUDA GPUs that torch sees, with name and memory, and whether the torch build has CUDA at all."""
    try:
        import torch
    except ImportError:
        return [Check("gpu", "fail", "torch is not importable", INSTALL_FIX)]
    if torch.version.cuda is None:
        return [
            Check(
                "gpu",
                "warn",
                f"torch {torch.__version__} is a CPU-only build",
                "install the CUDA build pinned in constraints.txt",
            )
        ]
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        detail = f"no CUDA GPU visible (torch built for CUDA {torch.version.cuda}"
        detail += f", CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ")"
        fix = "run on a GPU node (srun --gpus=1 simclr-hpc doctor; in the image: apptainer exec --nv); CPU runs work, slowly"
        return [Check("gpu", "warn", detail, fix)]
    checks = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        memory_gib = props.total_memory / 2**30
        bf16 = "bf16" if props.major >= 8 else "no native bf16 (precision auto: fp16 with loss scaling)"
        checks.append(
            Check(f"gpu{index}", "ok", f"{props.name}, {memory_gib:.0f} GiB, sm_{props.major}{props.minor}, {bf16}")
        )
    return checks


def check_nccl(gpu_visible: bool) -> list[Check]:
    """Whether the torch build carries NCCL, the backend of multi-GPU runs.

    Reads ``torch.cuda.nccl.version()`` rather than ``torch.distributed`` (which only ``distributed.py`` touches); a build
    with NCCL reports its version even without a GPU.
    """
    try:
        import torch.cuda.nccl as nccl

        version = ".".join(str(part) for part in nccl.version())
    except (ImportError, RuntimeError, AttributeError):
        return [
            Check(
                "nccl",
                "fail" if gpu_visible else "warn",
                "this torch build has no NCCL",
                "install the CUDA build of torch pinned in constraints.txt",
            )
        ]
    if not gpu_visible:
        return [
            Check(
                "nccl",
                "warn",
                f"NCCL {version} built in, but no GPU to use it (multi-process CPU runs use gloo)",
                "check again on a GPU node",
            )
        ]
    settings = ", ".join(f"{key}={value}" for key, value in sorted(os.environ.items()) if key.startswith("NCCL_"))
    return [Check("nccl", "ok", f"NCCL {version}" + (f" ({settings})" if settings else ""))]


def _run(argv: list[str]) -> tuple[int, str]:
    """Run a read-only command; return (exit code, stdout or the first stderr line). A timeout counts as a failure."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {SUBPROCESS_TIMEOUT_S} s"
    except OSError as err:
        return 127, str(err)
    if done.returncode != 0:
        return done.returncode, (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[0]
    return 0, done.stdout


def check_slurm(offline: bool) -> list[Check]:
    """Slurm client commands on PATH and, unless offline, the partitions this user may submit to and accounting."""
    missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
    if missing:
        return [
            Check(
                "slurm",
                "warn",
                f"not on PATH: {', '.join(missing)}",
                "submit from a Slurm login node (module load slurm); `run` and `demo` work without Slurm",
            )
        ]
    checks = [Check("slurm", "ok", f"{', '.join(SLURM_COMMANDS)} on PATH")]
    if offline:
        return checks
    code, out = _run(["sinfo", "-h", "-o", "%P"])
    partitions = sorted({line.strip() for line in out.splitlines() if line.strip()}) if code == 0 else []
    if code != 0:
        checks.append(
            Check("partitions", "fail", f"sinfo failed: {out}", "check that slurmctld is reachable (scontrol ping)")
        )
    elif not partitions:
        checks.append(
            Check(
                "partitions",
                "fail",
                "sinfo lists no partition this user can use",
                "ask the site for an account and partition; set them in configs/clusters/<site>.yaml",
            )
        )
    else:
        checks.append(Check("partitions", "ok", ", ".join(partitions) + " ('*' is the default)"))
    code, out = _run(["sacct", "-n", "-X", "-o", "JobID", "-S", "now"])
    if code != 0:
        checks.append(
            Check(
                "accounting",
                "warn",
                f"sacct failed: {out}",
                "without Slurm accounting, `simclr-hpc jobs` and submitit cannot follow finished jobs",
            )
        )
    else:
        checks.append(Check("accounting", "ok", "sacct answers"))
    return checks


def check_apptainer(image: Path | None) -> list[Check]:
    """Apptainer/Singularity on PATH (or that we already run inside an image), and the image file if one is named."""
    checks = []
    inside = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    runtime = shutil.which("apptainer") or shutil.which("singularity")
    if not inside and Path("/run/.containerenv").exists():  # podman's marker in every container it runs
        inside = "a podman container"
    if inside:
        checks.append(Check("apptainer", "ok", f"running inside {inside}"))
    elif runtime is None:
        checks.append(
            Check(
                "apptainer",
                "warn",
                "neither apptainer nor singularity is on PATH",
                "module load apptainer on the cluster, or run without a container (plain venv)",
            )
        )
    else:
        code, out = _run([runtime, "--version"])
        checks.append(
            Check(
                "apptainer",
                "ok" if code == 0 else "warn",
                out.strip() if code == 0 else f"{runtime}: {out}",
                "" if code == 0 else "reinstall or load a working apptainer module",
            )
        )
    if image is not None:
        if not image.is_file():
            checks.append(
                Check("image", "fail", f"{image}: no such file", "build it: apptainer build simclr.sif apptainer.def")
            )
        elif image.stat().st_size == 0 or not os.access(image, os.R_OK):
            checks.append(Check("image", "fail", f"{image}: empty or unreadable", "rebuild it (docs/containers.md)"))
        else:
            checks.append(Check("image", "ok", f"{image} ({image.stat().st_size / 2**30:.1f} GiB)"))
    return checks
