"""``data shards ... --submit``: a shard build as one Slurm array and one small job after it.

The build's plan is saved on the login node first (``data.build.plan_build``/``start_build``: the source is listed
once); then array task ``i`` of ``T`` writes its contiguous range of the plan's shards with the CPUs Slurm gave it
(``data.build.build_range``, resumable like a local build), and a one-CPU job that waits for the whole array
(``afterok``) writes ``index.json`` (``data.build.finish``). A failed task leaves the index unwritten and its finished
shards kept: submitting again writes only what is missing.

The jobs are CPU-only whatever the site profile's GPUs (no ``--gpus``, no ``--nv``); the profile gives partition,
account, qos, time, CPUs (``cpus_per_gpu * gpus_per_node`` per task unless ``--workers`` says), the environment and the
container. Logs go to ``OUT_DIR/_slurm/``.

It reuses ``executor.effective_profile`` and the container helpers and needs from a launcher only "submit an array of a
callable, then one job after it": in the ``Launcher`` interface that is ``submit_array(callable, args, params)``
followed by ``submit(callable, params, dependency=afterok(array))``; this module then keeps only the two callables
and :func:`shard_job_params`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from simclr_hpc.launch.container import container_python, resolve_image
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.executor import LaunchRequest, effective_profile, submitit_command

LOG_DIR = "_slurm"
MAX_TASKS = 64
"""Default array size cap: ImageNet's 1,331 shards become 64 tasks of about 21 shards."""


@dataclass(frozen=True)
class ShardRangeTask:
    """What array task ``i`` runs (picklable: submitit sends it to the job)."""

    out_dir: str
    tasks: int
    check: str

    def __call__(self, task: int) -> int:
        import os

        from simclr_hpc.data.build import build_range

        return build_range(self.out_dir, task, self.tasks, workers=len(os.sched_getaffinity(0)), check=self.check)


@dataclass(frozen=True)
class FinishShardsTask:
    """What the job after the array runs: ``index.json`` from the plan and the done records."""

    out_dir: str

    def __call__(self) -> str:
        from simclr_hpc.data.build import finish

        return str(finish(self.out_dir).root / "index.json")


def shard_job_params(request: LaunchRequest, out_dir: Path, name: str, cpus: int | None) -> tuple[dict, str]:
    """``(sbatch parameters, python command)`` of one CPU-only job of the build (``cpus`` None: the profile's CPUs of a
    node's GPUs)."""
    if request.executor != "slurm":
        raise LaunchError(f"--submit builds shards with Slurm; the {request.executor} executor is not supported here "
                          f"(run `simclr-hpc data shards` without --submit to build on this machine)")
    profile = effective_profile(request)
    cpus = cpus or profile.cpus_per_gpu * max(1, profile.gpus_per_node)
    profile = profile.model_copy(update={"gpus_per_node": 0})
    image = resolve_image(profile) if profile.image else None
    python = container_python(profile, image, out_dir.parent) if image else shlex.quote(sys.executable)
    setup = [f"export {k}={shlex.quote(v)}" for k, v in profile.env.items()] + list(profile.setup)
    params = {"job_name": name[:100], "time": profile.time_min, "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": cpus,
              "array_parallelism": profile.array_parallelism, "setup": setup}
    params.update({k: v for k, v in (("partition", profile.partition), ("account", profile.account),
                                     ("qos", profile.qos), ("constraint", profile.constraint)) if v})
    return params, python


@dataclass
class ShardArrayJobs:
    """What ``submit_shard_array`` submitted."""

    array_job_id: str
    finish_job_id: str
    tasks: int
    log_dir: Path


def _folder(out_dir: Path) -> Path:
    return out_dir / LOG_DIR


def render_shard_array(out_dir: str | Path, tasks: int, request: LaunchRequest, cpus: int | None = None) -> list[str]:
    """``--dry-run``: the array's sbatch script and the finishing job's (its dependency shown as a placeholder)."""
    out_dir = Path(out_dir).absolute()
    params, python = shard_job_params(request, out_dir, f"shards-{out_dir.name}", cpus)
    finish, _ = shard_job_params(request, out_dir, f"shards-{out_dir.name}-index", 1)
    finish.update(dependency="afterok:<array job id>")
    finish.pop("array_parallelism")
    command = submitit_command(python, _folder(out_dir))
    return [_script(params, command, _folder(out_dir), tasks), _script(finish, command, _folder(out_dir), None)]


def _script(params: dict, command: str, folder: Path, array: int | None) -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    extra = {"map_count": array} if array else {}
    return _make_sbatch_string(command=command, folder=folder, **params, **extra)


def submit_shard_array(out_dir: str | Path, tasks: int, request: LaunchRequest, check: str = "header",
                       cpus: int | None = None) -> ShardArrayJobs:
    """Submit ``tasks`` array tasks over the plan saved in ``out_dir``, then the job that writes ``index.json``."""
    import submitit

    out_dir = Path(out_dir).absolute()
    params, python = shard_job_params(request, out_dir, f"shards-{out_dir.name}", cpus)
    finish, _ = shard_job_params(request, out_dir, f"shards-{out_dir.name}-index", 1)
    folder = _folder(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_python=python)
    executor.update_parameters(**{f"slurm_{k}": v for k, v in params.items()})
    jobs = executor.map_array(ShardRangeTask(str(out_dir), tasks, check), list(range(tasks)))
    array_id = jobs[0].job_id.split("_")[0]
    finish.pop("array_parallelism")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_python=python)
    executor.update_parameters(**{f"slurm_{k}": v for k, v in finish.items()}, slurm_dependency=f"afterok:{array_id}")
    job = executor.submit(FinishShardsTask(str(out_dir)))
    return ShardArrayJobs(array_id, str(job.job_id), tasks, folder)


