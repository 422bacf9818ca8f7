"""``data shards ... --submit``: a shard build as one Slurm array and one small job after it.

The build's plan is saved on the login node first (``data.build.plan_build``/``start_build``: the source is listed
once); then array task ``i`` of ``T`` writes its contiguous range of the plan's shards with the CPUs Slurm gave it
(``data.build.build_range``, resumable like a local build), and a one-CPU job that waits for the whole array
(``afterok``) writes ``index.json`` (``data.build.finish``). A failed task leaves the index unwritten and its finished
shards kept: submitting again writes only what is missing.

The jobs are CPU-only whatever the site profile's GPUs (no ``--gpus``, no ``--nv``); the profile gives partition,
account, qos, time, CPUs (``cpus_per_gpu * gpus_per_node`` per task unless ``--workers`` says), the environment and the
container. Logs go to ``OUT_DIR/_slurm/``.

It builds a :class:`~simclr_hpc.launch.jobspec.JobSpec` of its own (CPU-only, one task) and hands it to the Slurm
launcher's submitit executor, as a stage's sweep does: this module keeps only the two callables and
:func:`shard_job_spec`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from simclr_hpc.launch.container import container_python, resolve_image
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.jobspec import JobSpec, LaunchRequest, effective_profile, render_sbatch
from simclr_hpc.launch.slurm_launcher import SlurmLauncher
from simclr_hpc.launch.submit import launcher_for

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


def shard_job_spec(request: LaunchRequest, out_dir: Path, name: str, cpus: int | None) -> JobSpec:
    """The spec of one CPU-only job of the build (``cpus`` None: the profile's CPUs of a node's GPUs)."""
    if launcher_for(request.executor).blocking:
        raise LaunchError(
            f"--submit builds shards through a scheduler; the {request.executor} executor runs here "
            f"(run `simclr-hpc data shards` without --submit to build on this machine)"
        )
    profile = effective_profile(request)
    cpus = cpus or profile.cpus_per_gpu * max(1, profile.gpus_per_node)
    profile = profile.model_copy(update={"gpus_per_node": 0})
    image = resolve_image(profile) if profile.image else None
    python = container_python(profile, image, out_dir.parent) if image else shlex.quote(sys.executable)
    setup = [f"export {k}={shlex.quote(v)}" for k, v in profile.env.items()] + list(profile.setup)
    params = {
        "job_name": name[:100],
        "time": profile.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": cpus,
        "array_parallelism": profile.array_parallelism,
        "setup": setup,
    }
    params.update(
        {
            k: v
            for k, v in (
                ("partition", profile.partition),
                ("account", profile.account),
                ("qos", profile.qos),
                ("constraint", profile.constraint),
            )
            if v
        }
    )
    return JobSpec(
        stage="shards",
        profile=profile,
        nodes=1,
        tasks_per_node=1,
        python=python,
        image=image,
        slurm_params=params,
        setup=tuple(setup),
    )


def _finish_spec(request: LaunchRequest, out_dir: Path, dependency: str) -> JobSpec:
    spec = shard_job_spec(request, out_dir, f"shards-{out_dir.name}-index", 1).with_dependency(dependency)
    return replace(spec, slurm_params={k: v for k, v in spec.slurm_params.items() if k != "array_parallelism"})


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
    spec = shard_job_spec(request, out_dir, f"shards-{out_dir.name}", cpus)
    finish = _finish_spec(request, out_dir, "afterok:<array job id>")
    return [render_sbatch(spec, _folder(out_dir), tasks), render_sbatch(finish, _folder(out_dir))]


def submit_shard_array(
    out_dir: str | Path, tasks: int, request: LaunchRequest, check: str = "header", cpus: int | None = None
) -> ShardArrayJobs:
    """Submit ``tasks`` array tasks over the plan saved in ``out_dir``, then the job that writes ``index.json``."""
    out_dir = Path(out_dir).absolute()
    spec = shard_job_spec(request, out_dir, f"shards-{out_dir.name}", cpus)
    folder = _folder(out_dir)
    slurm = SlurmLauncher()
    jobs = slurm.submitit_executor(spec, folder).map_array(
        ShardRangeTask(str(out_dir), tasks, check), list(range(tasks))
    )
    array_id = jobs[0].job_id.split("_")[0]
    finish = _finish_spec(request, out_dir, f"afterok:{array_id}")
    job = slurm.submitit_executor(finish, folder).submit(FinishShardsTask(str(out_dir)))
    return ShardArrayJobs(array_id, str(job.job_id), tasks, folder)
