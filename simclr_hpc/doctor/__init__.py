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

from pathlib import Path

from simclr_hpc.doctor.check import Check, Status
from simclr_hpc.doctor.machine import (
    check_apptainer,
    check_gpus,
    check_nccl,
    check_packages,
    check_python,
    check_slurm,
)
from simclr_hpc.doctor.storage import check_data_root, check_run_root

__all__ = [
    "Check",
    "Status",
    "check_apptainer",
    "check_data_root",
    "check_gpus",
    "check_nccl",
    "check_packages",
    "check_python",
    "check_run_root",
    "check_slurm",
    "exit_code",
    "run_checks",
]


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
