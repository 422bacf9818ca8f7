"""How many loader worker processes fit the CPUs this task was given (warn, never oversubscribe).

Slurm binds each task to its ``--cpus-per-task`` CPUs (the process's affinity says which); a rank started without a
binding on a shared node gets its share of the machine. One CPU stays with the training process. The count is the
largest divisor of the configured ``data.num_workers`` that fits: the training stream's batches depend on the
configured count (its streams per rank), not on how many processes serve them, so a run resumed on a node with fewer
CPUs still sees the same batches.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger("simclr_hpc")


def available_cpus(local_world_size: int = 1) -> int:
    """CPUs this process may use: its affinity (Slurm's binding), capped by ``SLURM_CPUS_PER_TASK``; when the
    affinity is the whole machine, shared by the ``local_world_size`` ranks of this node."""
    cpus = len(os.sched_getaffinity(0))
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) > 0:
        cpus = min(cpus, int(per_task))
    elif cpus == os.cpu_count() and local_world_size > 1:
        cpus = max(1, cpus // local_world_size)
    return cpus


def fit_workers(configured: int, local_world_size: int | None = None) -> int:
    """Loader workers for this rank: ``configured`` when it leaves a CPU for training, else the largest divisor of
    it that does (0: the training process reads itself), with a warning saying how to ask for more CPUs.
    ``local_world_size`` None: the launcher's ``LOCAL_WORLD_SIZE`` (1 without one)."""
    if local_world_size is None:
        value = os.environ.get("LOCAL_WORLD_SIZE", "")
        local_world_size = int(value) if value.isdigit() and int(value) > 0 else 1
    cpus = available_cpus(local_world_size)
    if configured + 1 <= cpus or configured == 0:
        return configured
    fitted = max((d for d in range(1, configured + 1) if configured % d == 0 and d + 1 <= cpus), default=0)
    _warn(configured, fitted, cpus)
    return fitted


@functools.lru_cache(maxsize=None)
def _warn(configured: int, fitted: int, cpus: int) -> None:
    log.warning(
        "data.num_workers=%d does not fit the %d CPU(s) of this task (one stays with training): %d loader "
        "worker(s) serve its %d streams instead (the same batches); ask for more CPUs per task (the site "
        "profile's cpus_per_gpu) to read faster",
        configured,
        cpus,
        fitted,
        configured,
    )
