"""Launching runs on Slurm (or this machine) through submitit: the only package that knows submitit and Slurm, and
the only one that names an executor.

Public API (what ``cli/`` and ``study/`` call)::

    request = LaunchRequest(nodes=2, gpus_per_node=4, profile="example-site", container="img.sif", executor="slurm")
    make_request(**fields) -> LaunchRequest            (None values dropped; bad values -> LaunchError)
    launcher_for(name) -> Launcher
        The executor ``name`` (``EXECUTORS``: slurm, local, inprocess), chosen once per command: ``blocking`` says
        whether a study must wait for each array (``wait``) before submitting what depends on it.
    submit_stage(stage, cfg, request, dependency=None) -> JobRecord
        One run of ``stage`` (pretrain|finetune|distill|transfer): one job of ``request.nodes`` nodes, one task per GPU
        (one per node when gpus_per_node is 0), USR2 ahead of the time limit, requeue. ``dependency``: job ids that
        must COMPLETE first (afterok); ``"afterok:12:13"`` strings are accepted too. Returns at once.
    submit_array(stage, cfgs, request, parallelism=None, dependency=None) -> list[JobRecord]
        A sweep as one Slurm array with at most ``parallelism`` tasks running at once (default: the profile's),
        split into several arrays (chained with afterany) above the profile's ``max_array_size``.
        Each record's ``job_id`` is ``ARRAY_INDEX`` (``123_4``), ``array_job_id`` is ``123``: pass ``array_job_id`` as
        the dependency of the next stage to wait for the whole sweep.
    render_stage(...) -> str / render_array(...) -> list[str]
        ``--dry-run``: the exact sbatch script(s), same validation, nothing written or submitted; works without Slurm.
    write_manifest(stage, cfgs, path) -> Path
        ``slurm/array.sbatch`` input: line i = array index i-1 = ``STAGE<TAB>/abs/path/config.submitted.yaml``.
    refresh(Registry(registry_path(root, study))) -> list[JobRecord]
        The study's jobs with states from each job's launcher (one squeue -u call for Slurm's), and why a failed one
        failed (``reason``). ``refresh_all(registries)``: the same over many studies, still one query.
    wait(record_or_records, poll_s=1.0, timeout_s=None) -> state(s)
        Block until those jobs have ended; their final states (a study on this machine, and tests).

Every user mistake (unknown partition, more nodes than the partition has, missing image, unknown or failed dependency,
bad profile field, unsafe name or path) raises ``LaunchError`` (a ``simclr_hpc.config.UserError``) before anything is
written or submitted. Inside a job, ``StageJob`` exports MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK/
LOCAL_WORLD_SIZE (``environment.py``) and calls ``simclr_hpc.train.runner.run_stage(stage, cfg)``; its ``checkpoint()``
only resubmits. No torch import anywhere in this package.

Requeue, three ways, each resuming from the run's latest whole checkpoint: Slurm's own ``--requeue`` (node failure,
``scontrol requeue``); preemption (USR2 -> submitit calls ``checkpoint()`` -> requeue); and a lost rank: when a task
dies on a node Slurm still thinks healthy, the surviving ranks fail in their next collective (at once with gloo's
"connection closed by peer", or after ``train.collective_timeout_s``), and the rank that sees it runs
``scontrol requeue`` on its own job (``task.requeue_after_lost_peer``) at most the profile's ``max_requeues`` times.
"""

from simclr_hpc.launch.environment import DistVars, dist_vars, export_torch_env, master_port
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.jobs import cancel, refresh, refresh_all, wait
from simclr_hpc.launch.jobspec import JobSpec, LaunchRequest, build_job_spec, make_request, render_sbatch
from simclr_hpc.launch.launcher import Batch, Dependency, Launcher, array_stamp, parse_dependency
from simclr_hpc.launch.profile import Profile, list_profiles, load_profile, parse_time_min
from simclr_hpc.launch.registry import JobRecord, Registry, find_job, registry_path, study_registries
from simclr_hpc.launch.submit import (
    CLUSTER,
    EXECUTORS,
    THIS_MACHINE,
    check_request,
    executor_help,
    launcher_for,
    prepare,
    render_array,
    render_stage,
    submit_array,
    submit_stage,
    write_manifest,
)
from simclr_hpc.launch.task import RUN_TARGET, StageJob

__all__ = [
    "Batch",
    "array_stamp",
    "CLUSTER",
    "EXECUTORS",
    "THIS_MACHINE",
    "Dependency",
    "DistVars",
    "JobRecord",
    "JobSpec",
    "LaunchError",
    "LaunchRequest",
    "Launcher",
    "Profile",
    "RUN_TARGET",
    "Registry",
    "StageJob",
    "build_job_spec",
    "cancel",
    "check_request",
    "dist_vars",
    "executor_help",
    "export_torch_env",
    "find_job",
    "launcher_for",
    "list_profiles",
    "load_profile",
    "make_request",
    "master_port",
    "parse_dependency",
    "parse_time_min",
    "prepare",
    "refresh",
    "refresh_all",
    "registry_path",
    "render_array",
    "render_sbatch",
    "render_stage",
    "study_registries",
    "submit_array",
    "submit_stage",
    "wait",
    "write_manifest",
]
