"""``simclr-hpc doctor``: what is ready on this machine and what is not, one check per line with the fix.

Each check returns :class:`Check` lines with a status: ``ok``; ``warn`` (something a run can do without, such as no GPU on
a login node, with the fix); ``fail`` (something a run will trip over: a missing package, a broken shard directory, a run
directory that cannot be written). The command exits 1 if any line fails.

Kept light on purpose, so it runs on a login node and as the image's ``%test``: package versions come from installed
metadata, torch is imported only for the GPU and NCCL checks, shard directories are checked by reading ``index.json`` with
``json`` (not through ``simclr_hpc.data``), and Slurm is only asked read-only questions (``sinfo``, ``sacct``), skipped
with ``offline``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from simclr_hpc.data.tarcheck import end_marker_missing
from simclr_hpc.readers import FileError, read_json

Status = Literal["ok", "warn", "fail"]

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


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, its status, what was found and, unless ok, how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


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


def _shard_names(index: object) -> list[str]:
    """Every ``*.tar`` file name mentioned anywhere in ``index.json``, in order, once each.

    Walks the whole document rather than one schema, so this check does not depend on how ``data/shards.py`` lays out
    splits; shard names are the only strings there that end in ``.tar``. Per-sample keys make the document large
    (millions of strings for ImageNet), hence a deque.
    """
    names: dict[str, None] = {}
    queue = deque([index])
    while queue:
        node = queue.popleft()
        if isinstance(node, dict):
            queue.extend(node.values())
        elif isinstance(node, list):
            queue.extend(node)
        elif isinstance(node, str) and node.endswith(".tar"):
            names[node] = None
    return list(names)


def check_data_root(root: Path) -> list[Check]:
    """A shard directory: it exists, has a readable ``index.json``, and every shard it lists exists and is non-empty."""
    name = "data"
    make = f"make it with `simclr-hpc data shards SOURCE {shlex.quote(str(root))}` or pass the right --data-root"
    if not root.is_dir():
        return [Check(name, "fail", f"data root {root}: no such directory", make)]
    index_path = root / "index.json"
    if not index_path.is_file():
        return [Check(name, "fail", f"data root {root}: no index.json", make)]
    try:
        index = read_json(index_path, "shard index")
    except FileError as err:
        return [Check(name, "fail", f"data root {root}: index.json unreadable ({err.lines[0]})", make)]
    shards = _shard_names(index)
    if not shards:
        return [Check(name, "fail", f"data root {root}: index.json lists no shards", make)]
    missing, empty, cut, total_bytes = [], [], [], 0
    for shard in shards:
        path = root / shard
        if not path.is_file():
            missing.append(shard)
        elif path.stat().st_size == 0:
            empty.append(shard)
        else:
            total_bytes += path.stat().st_size
            if end_marker_missing(path):  # a copy or download that stopped early: reading it would fail mid-run
                cut.append(shard)
    problems = [
        f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for names, what in ((missing, "missing"), (empty, "empty"), (cut, "cut short"))
        if names
    ]
    if problems:
        return [
            Check(
                name,
                "fail",
                f"data root {root}: of {len(shards)} shards, " + "; ".join(problems),
                f"copy the shards again or rebuild them; `simclr-hpc data verify {shlex.quote(str(root))}` checks every sample",
            )
        ]
    return [Check(name, "ok", f"data root {root}: {len(shards)} shards, {total_bytes / 2**20:.1f} MiB")]


def check_run_root(root: Path) -> list[Check]:
    """The run directory can be written: a temporary file is created in it, or in its nearest existing parent."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = "choose a writable run root on a shared filesystem (run.root in the config, or --run-root)"
    if not existing.is_dir():
        return [Check("run root", "fail", f"{root}: {existing} is not a directory", fix)]
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".simclr-hpc-doctor-"):
            pass
    except OSError as err:
        return [Check("run root", "fail", f"{root}: cannot write in {existing} ({err.strerror})", fix)]
    where = "writable" if existing == root else f"will be created (parent {existing.resolve()} is writable)"
    return [Check("run root", "ok", f"{root.resolve()} {where}")]


def run_checks(
    offline: bool = False,
    data_roots: list[Path] | None = None,
    run_root: Path = Path("runs"),
    image: Path | None = None,
) -> list[Check]:
    """Every check, in report order. ``offline`` skips what asks the Slurm controller."""
    checks = check_python() + check_packages()
    gpu_checks = check_gpus()
    checks += gpu_checks
    checks += check_nccl(gpu_visible=any(check.name.startswith("gpu") and check.status == "ok" for check in gpu_checks))
    checks += check_slurm(offline)
    checks += check_apptainer(image)
    for root in data_roots or []:
        checks += check_data_root(root)
    checks += check_run_root(run_root)
    return checks


def exit_code(checks: list[Check]) -> int:
    """1 if any check failed, else 0: warnings describe what is missing but do not stop a run."""
    return 1 if any(check.status == "fail" for check in checks) else 0
