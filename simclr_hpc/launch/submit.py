"""Submit stages and sweeps, or render them (``--dry-run``): one preparation for both, then the chosen launcher.

Which launcher: ``EXECUTORS`` maps each ``--executor`` name to the :class:`~simclr_hpc.launch.launcher.Launcher` that
runs its jobs, the one place that does (a new executor is one class and one line there); ``launcher_for(name)`` makes
a command's one launcher.

Order matters: every check that can fail on user input (the request, the profile, the launcher's own, the runs' inputs)
runs in ``prepare`` before anything is written, printed or submitted, and a dry run goes through the very same
``prepare``; so a bad request leaves no trace and a dry run fails exactly where a submission would. Submission never
waits for jobs to run (the in-process launcher runs them, by definition). The checks every launcher shares (two
runs writing one directory, an unsafe path; a malformed dependency: ``launcher.parse_dependency``) are here; a
launcher's own (partition, nodes, GPUs, dependencies that exist) are its ``check``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from simclr_hpc import fsutil, references, rundir
from simclr_hpc.config import STAGES, Config
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.jobspec import LaunchRequest, build_job_spec, effective_profile, make_request
from simclr_hpc.launch.launcher import (
    Batch,
    Dependency,
    Launcher,
    array_stamp,
    parse_dependency,
    write_submitted_config,
)
from simclr_hpc.launch.local_launcher import InProcessLauncher, LocalLauncher
from simclr_hpc.launch.profile import check_plain_text
from simclr_hpc.launch.registry import JobRecord, Registry, registry_path
from simclr_hpc.launch.slurm_launcher import SlurmLauncher
from simclr_hpc.launch.task import RUN_TARGET
from simclr_hpc.outputs import check_output_dir, check_output_file
from simclr_hpc.readers import quote

EXECUTORS: dict[str, type[Launcher]] = {cls.name: cls for cls in (SlurmLauncher, LocalLauncher, InProcessLauncher)}
CLUSTER = SlurmLauncher.name
"""The default of ``submit`` and ``sweep``."""
THIS_MACHINE = LocalLauncher.name
"""The default of ``study run`` and ``demo``."""


def launcher_for(name: str, *, blocking: bool | None = None, what: str = "--executor") -> Launcher:
    """A fresh launcher for executor ``name`` (one per command: it caches what it asked the scheduler).
    ``blocking``: only launchers that are (True) or are not (False) blocking are accepted."""
    allowed = [n for n, cls in EXECUTORS.items() if blocking is None or cls.blocking == blocking]
    if name not in allowed:
        here = "; this command runs on this machine: for a cluster, `simclr-hpc study submit STUDY`" if blocking else ""
        raise LaunchError(f"{what} {quote(name)}: use {' or '.join(allowed)}{here}")
    return EXECUTORS[name]()


def executor_help(blocking: bool | None = None) -> str:
    """``--executor``'s help: each accepted name with its one line."""
    return "; ".join(f"{n}: {cls.help}" for n, cls in EXECUTORS.items() if blocking is None or cls.blocking == blocking)


def resolved(cfg: Config) -> Config:
    """The config with ``run.root`` absolute: jobs start in other directories and inside containers."""
    root = Path(cfg.run.root).expanduser().absolute()
    try:
        check_plain_text(str(root), "run.root")
    except ValueError as err:
        raise LaunchError(str(err)) from None
    data = cfg.model_dump(mode="json")
    data["run"]["root"] = str(root)
    return Config.model_validate(data)


def check_unique(stage: str, cfgs: list[Config]) -> None:
    """Two runs of one sweep must not write the same run directory."""
    seen: dict[Path, int] = {}
    for i, cfg in enumerate(cfgs):
        path = cfg.run_dir(stage)
        if path in seen:
            raise LaunchError(f"sweep entries {seen[path]} and {i} both write {path}: give them different run.name")
        seen[path] = i


def check_request(request: LaunchRequest) -> None:
    """The request on its own: its executor and its profile with the overrides (a study with nothing left to submit
    still reports a bad ``--profile``, before it prints anything)."""
    launcher_for(request.executor)
    effective_profile(request)


def _job_name(stage: str, cfg: Config, array: bool) -> str:
    return (f"{stage}-{cfg.run.study}" + ("-sweep" if array else f"-{cfg.run.name}"))[:100]


def _dependency(dependency: Dependency | list[str] | str | None) -> Dependency:
    """A user's ``--dependency`` (afterok only, see ``parse_dependency``), or a Dependency a library caller
    (the study) built, e.g. ``afterany`` on the arrays it submitted just before."""
    if isinstance(dependency, Dependency):
        return dependency
    return Dependency("afterok", tuple(parse_dependency(dependency)))


def prepare(
    stage: str,
    cfgs: list[Config],
    request: LaunchRequest,
    dependency=None,
    *,
    array: bool,
    dry_run: bool,
    target: str = RUN_TARGET,
    launcher: Launcher | None = None,
    check_inputs: bool = True,
) -> tuple[Launcher, Batch]:
    """Every check of a submission, in order; the launcher and the checked batch. Nothing is written.

    ``check_inputs``: check what each run reads (its shards and the finished runs it loads; see ``references``),
    with the runs it depends on allowed to be still to come. The study checks them itself (it knows which of its runs
    are to come, and builds missing shards) and passes False. ``launcher``: the command's own (else a new one).
    """
    if stage not in STAGES:
        raise LaunchError(f"stage {stage!r}: use one of {', '.join(STAGES)}")
    if not cfgs:
        raise LaunchError("nothing to submit: the sweep is empty")
    cfgs = [resolved(c) for c in cfgs]
    check_unique(stage, cfgs)
    needs = _dependency(dependency)
    launcher = launcher or launcher_for(request.executor)
    spec = build_job_spec(stage, request, Path(cfgs[0].run.root), _job_name(stage, cfgs[0], array))
    batch = launcher.check(Batch(stage, tuple(cfgs), spec, needs, target), dry_run)
    if check_inputs and target == RUN_TARGET:
        # What the runner would find missing only in the job's log (no encoder, no shards) is refused before queueing;
        # runs this one waits for may still be to come.
        for cfg in cfgs:
            references.check_inputs(stage, cfg, runs_may_be_pending=bool(needs.ids))
    return launcher, batch


def _with_parallelism(request: LaunchRequest, parallelism: int | None) -> LaunchRequest:
    """``parallelism`` None or 0 = the profile's cap."""
    return request.model_copy(update={"array_parallelism": parallelism}) if parallelism else request


def render_stage(stage: str, cfg: Config, request: LaunchRequest, dependency=None, *, target: str = RUN_TARGET) -> str:
    """``--dry-run``: the exact sbatch script ``submit_stage`` would submit. Works without Slurm; checks the same."""
    launcher, batch = prepare(stage, [cfg], request, dependency, array=False, dry_run=True, target=target)
    return launcher.render(batch, "", array=False)[0]


def render_array(
    stage: str,
    cfgs: list[Config],
    request: LaunchRequest | None = None,
    parallelism: int | None = None,
    dependency=None,
    *,
    target: str = RUN_TARGET,
    launcher: Launcher | None = None,
    check_inputs: bool = True,
    **request_fields,
) -> list[str]:
    """``--dry-run`` of a sweep: one sbatch script per array (several when the sweep exceeds max_array_size).
    ``request`` may be replaced by its fields as keywords (``profile=``, ``container=``, ...)."""
    request = _with_parallelism(request or make_request(**request_fields), parallelism)
    launcher, batch = prepare(
        stage,
        cfgs,
        request,
        dependency,
        array=True,
        dry_run=True,
        target=target,
        launcher=launcher,
        check_inputs=check_inputs,
    )
    return launcher.render(batch, array_stamp(), array=True)


def _check_registries(batch: Batch) -> None:
    """Every registry the batch's jobs go into can record them (not corrupt, locked, read-only or newer): checked
    before a job runs unrecorded."""
    for path in dict.fromkeys(registry_path(c.run.root, c.run.study) for c in batch.cfgs):
        Registry(path).check_writable()


def _add_to_registries(records: list[JobRecord]) -> list[JobRecord]:
    """Record each job in its study's registry (a sweep may span studies)."""
    by_study: dict[Path, list[JobRecord]] = defaultdict(list)
    for rec in records:
        by_study[rec.registry_path].append(rec)
    for path, recs in by_study.items():
        Registry(path).add(recs)
    return records


def submit_stage(
    stage: str,
    cfg: Config,
    request: LaunchRequest,
    dependency=None,
    *,
    target: str = RUN_TARGET,
    launcher: Launcher | None = None,
) -> JobRecord:
    """Submit one run of ``stage`` (one job of ``request.nodes`` nodes, one task per GPU) and record it.

    ``dependency``: job ids (or ``afterok:ID`` strings) that must complete successfully first. Returns at once.
    """
    launcher, batch = prepare(
        stage, [cfg], request, dependency, array=False, dry_run=False, target=target, launcher=launcher
    )
    _check_registries(batch)
    return _add_to_registries([launcher.submit_one(batch)])[0]


def submit_array(
    stage: str,
    cfgs: list[Config],
    request: LaunchRequest,
    parallelism: int | None = None,
    dependency=None,
    *,
    target: str = RUN_TARGET,
    launcher: Launcher | None = None,
    check_inputs: bool = True,
) -> list[JobRecord]:
    """Submit a sweep as one Slurm array (``--array=0-N%parallelism``), or the local executor's worker processes,
    and record every run. ``parallelism`` None or 0 = the profile's cap.

    Sweeps larger than the site's max_array_size become several arrays, each waiting (afterany) for the previous one,
    so the parallelism cap holds over the whole sweep. ``dependency`` applies to every array.
    """
    launcher, batch = prepare(
        stage,
        cfgs,
        _with_parallelism(request, parallelism),
        dependency,
        array=True,
        dry_run=False,
        target=target,
        launcher=launcher,
        check_inputs=check_inputs,
    )
    _check_registries(batch)
    return _add_to_registries(launcher.submit_array(batch, array_stamp()))


def write_manifest(stage: str, cfgs: list[Config], path: str | Path, force: bool = False) -> Path:
    """Manifest for ``slurm/array.sbatch``: line i (1-based) = array index i-1, ``STAGE<TAB>/abs/config.yaml``.

    Each resolved config is written to ``<run_dir>/config.submitted.yaml``; the template runs
    ``simclr-hpc run STAGE -c CONFIG`` for line ``SLURM_ARRAY_TASK_ID + 1``. Returns the manifest's absolute path.
    Every check comes first: an existing manifest is replaced only with ``force``, a missing parent directory is an
    error (none is created), and the manifest is written through a temporary file that never outlives a failure.
    """
    if stage not in STAGES:
        raise LaunchError(f"stage {stage!r}: use one of {', '.join(STAGES)}")
    if not cfgs:
        raise LaunchError("nothing to write: the sweep is empty")
    path = Path(path).expanduser().absolute()
    try:
        check_plain_text(str(path), "--manifest")
    except ValueError as err:
        raise LaunchError(str(err)) from None
    check_output_file(path, "--manifest", force)
    cfgs = [resolved(c) for c in cfgs]
    check_unique(stage, cfgs)
    for root in dict.fromkeys(c.run.root for c in cfgs):
        check_output_dir(root, "run.root")
    lines = []
    for cfg in cfgs:
        write_submitted_config(stage, cfg)
        lines.append(f"{stage}\t{rundir.submitted_config_path(cfg.run_dir(stage))}\n")
    try:
        fsutil.write_text_atomic(path, "".join(lines))
    except fsutil.AtomicWriteError as err:
        raise LaunchError(str(err)) from None
    return path
