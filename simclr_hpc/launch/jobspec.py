"""From a request and a site profile to a :class:`JobSpec`: submitit's parameters, the task's python command, the
sbatch text.

The spec is computed once and used twice: a launcher hands it to submitit (``Launcher.submitit_executor``),
``render_sbatch`` turns it into the exact script submitit would write (through submitit's own ``_make_sbatch_string``),
without Slurm installed. A spec is never changed after it is built: ``with_dependency`` returns a copy.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simclr_hpc.config import STAGES, format_errors
from simclr_hpc.launch.container import container_python, resolve_image
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.profile import Profile, check_plain_text, load_profile
from simclr_hpc.launch.task import host_setup, host_teardown


class LaunchRequest(BaseModel):
    """What a user asks for on the command line; every ``None`` falls back to the site profile."""

    model_config = ConfigDict(extra="forbid")

    nodes: int = Field(1, ge=1, le=100_000)
    """Nodes of each job."""
    gpus_per_node: int | None = Field(None, ge=0, le=16)
    """GPUs (= tasks) per node; 0 = CPU-only, one task per node. None = the profile's."""
    time: str | None = None
    """Time limit (Slurm format, e.g. ``1-00:00:00``); None = the profile's."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    profile: str | None = None
    """Site profile name (``configs/clusters/<name>.yaml``) or path to a profile file; None = built-in defaults."""
    container: str | None = None
    """Image every task runs in (``.sif`` path or podman image); None = the profile's image; ``"none"`` = no container."""
    executor: str = "slurm"
    """Where the jobs run: a name of ``launch.submit.EXECUTORS`` (checked when its launcher is chosen)."""
    array_parallelism: int | None = Field(None, ge=1)
    """Cap on array tasks running at once; None = the profile's."""

    @field_validator("container")
    @classmethod
    def _container(cls, value: str | None) -> str | None:
        return None if value in (None, "") else check_plain_text(value, "--container")


def make_request(**fields) -> LaunchRequest:
    """``LaunchRequest(**fields)`` with ``None`` values dropped; a bad field is a LaunchError."""
    try:
        return LaunchRequest(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        raise LaunchError(format_errors(err)) from None


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Everything needed to submit (or render) one job or one array of a stage, on any launcher."""

    stage: str
    profile: Profile
    """The effective profile: the site's, with the request's overrides applied and validated."""
    nodes: int
    tasks_per_node: int
    python: str
    """Shell command that starts Python in each task (with the container prefix when there is one)."""
    image: str | None
    """The image every task runs in (a .sif path or a podman image name), or None."""
    slurm_params: dict
    """submitit SlurmExecutor parameters (sbatch names): exactly what goes into the script. Never changed in place."""
    setup: tuple[str, ...] = ()
    """The profile's environment exports and setup lines (the local executor runs these; Slurm's script has more)."""

    def with_dependency(self, dependency: str | None) -> JobSpec:
        """A copy whose sbatch ``--dependency`` is ``dependency`` (None: no dependency)."""
        params = {k: v for k, v in self.slurm_params.items() if k != "dependency"}
        if dependency:
            params["dependency"] = dependency
        return dataclasses.replace(self, slurm_params=params)


def effective_profile(request: LaunchRequest) -> Profile:
    """The request's profile with its command-line overrides, validated as one profile (names, time format, ...)."""
    base = load_profile(request.profile)
    overrides = {
        key: getattr(request, key)
        for key in ("gpus_per_node", "time", "partition", "account", "qos", "constraint", "array_parallelism")
        if getattr(request, key) is not None
    }
    if request.container == "none":
        overrides["image"] = None
    elif request.container:
        overrides["image"] = request.container
    try:
        return Profile.model_validate({**base.model_dump(), **overrides})
    except ValidationError as err:
        lines = [line.replace("partition:", "--partition:", 1) for line in format_errors(err)]
        raise LaunchError(lines) from None


def build_job_spec(
    stage: str,
    request: LaunchRequest,
    run_root: Path,
    job_name: str,
    dependency: str | None = None,
    check_image: bool = True,
) -> JobSpec:
    """Resolve the request against its profile into submitit parameters. Raises LaunchError on bad input."""
    if stage not in STAGES:
        raise LaunchError(f"stage {stage!r}: use one of {', '.join(STAGES)}")
    profile = effective_profile(request)
    image = resolve_image(profile, check_image) if profile.image else None
    gpus = profile.gpus_per_node
    # One task (rank) per GPU; CPU-only nodes get one task each.
    tasks_per_node = max(1, gpus)
    python = container_python(profile, image, run_root) if image else shlex.quote(sys.executable)
    setup = [f"export {name}={shlex.quote(value)}" for name, value in profile.env.items()] + list(profile.setup)
    # The batch script on the host requeues the job when a task asks (launch/task.py): tasks need no scontrol.
    slurm_setup = setup + host_setup(run_root)
    params: dict = {
        "job_name": job_name,
        "time": profile.time_min,
        "nodes": request.nodes,
        "ntasks_per_node": tasks_per_node,
        "cpus_per_task": profile.cpus_per_gpu,
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": profile.array_parallelism,
        # --requeue: a job preempted or requeued by `scontrol requeue` goes back to the queue instead of ending.
        # --kill-on-invalid-dep: a job whose dependency can never be satisfied (an afterok job that failed) is
        # cancelled with reason DependencyNeverSatisfied instead of pending forever.
        "additional_parameters": {"requeue": True, "kill_on_invalid_dep": "yes"},
        # A task that dies ends the others at once (they would wait in a collective until NCCL's watchdog aborts
        # them, train.collective_timeout_s later); the batch script then requeues the job (launch/task.py).
        "srun_args": ["--kill-on-bad-exit=1"],
    }
    optional = {
        "partition": profile.partition,
        "account": profile.account,
        "qos": profile.qos,
        "constraint": profile.constraint,
        "mail_type": profile.mail_type,
        "mail_user": profile.mail_user,
        "dependency": dependency or None,
        "setup": slurm_setup,
        "teardown": host_teardown(profile.max_requeues),
        "gpus_per_node": gpus if gpus > 0 else None,
        "mem": _mem(profile.mem_per_gpu_gb * max(1, gpus)) if profile.mem_per_gpu_gb else None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return JobSpec(
        stage=stage,
        profile=profile,
        nodes=request.nodes,
        tasks_per_node=tasks_per_node,
        python=python,
        image=image,
        slurm_params=params,
        setup=tuple(setup),
    )


def _mem(gb: float) -> str:
    return f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"


def submitit_command(python: str, folder: Path) -> str:
    """The command line submitit puts after ``srun`` (same as ``SlurmExecutor._submitit_command_str``)."""
    return " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])


def render_sbatch(spec: JobSpec, folder: Path, array_size: int | None = None) -> str:
    """The sbatch script submitit writes for this spec: rendered by submitit's own function, no Slurm needed."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = dict(spec.slurm_params)
    if array_size is not None:
        params["map_count"] = array_size
    return _make_sbatch_string(command=submitit_command(spec.python, folder), folder=folder, **params)
