"""The one walk of a study, and every check before it: ``study run``, ``study submit`` and ``study submit --dry-run``
all call :func:`preflight`, then take their arrays from :meth:`Preflight.handouts`. So a dry run fails exactly where a
submission would, before anything is printed or written, and prints the job list the submission makes.

The checks, in order: the study file (schema, references between its sections, every run config), ``--only``, the
executor and its profile, stale shards and results, what each run reads that is already there (finished runs,
checkpoints), the jobs of earlier commands still queued or running (:func:`active_jobs`), and the launcher's own checks
of each array (partition, nodes).

The walk: which runs are handed out (:func:`select`: not done, selected), grouped into which arrays (:func:`arrays`:
one per stage and wave, in plan order), split into fresh runs and runs whose job still lives (:func:`handouts`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from simclr_hpc import launch, rundir
from simclr_hpc.config import STAGES
from simclr_hpc.data.index import has_index
from simclr_hpc.launch.task import RUN_TARGET
from simclr_hpc.references import check_inputs
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.provenance import Stale, stale_in_plan, stale_lines
from simclr_hpc.study.runs import DatasetJob, Plan, RunSpec
from simclr_hpc.study.schema import StudyError


def is_done(run: RunSpec) -> bool:
    """A run is done when its result.json exists and parses (written atomically by the runner)."""
    return rundir.read_result_json(run.result_path) is not None


def is_selected(run: RunSpec, only: set[str] | None) -> bool:
    """Whether ``only`` (stage names or run keys; None = everything) selects ``run``."""
    return only is None or run.stage in only or run.key in only


@dataclass(frozen=True)
class Selection:
    """The selected runs of a plan split into those to hand out and those already done (skipped, never redone)."""

    todo: list[RunSpec]
    done: list[RunSpec]


def select(plan: Plan, only: set[str] | None = None, redo: frozenset[str] = frozenset()) -> Selection:
    """The runs ``only`` selects, in plan order, split by whether they are done. ``redo``: keys of done runs to run
    again (stale ones, moved aside before the walk)."""
    selection = Selection([], [])
    for run in plan.runs:
        if is_selected(run, only):
            (selection.done if is_done(run) and run.key not in redo else selection.todo).append(run)
    return selection


@dataclass(frozen=True)
class Array:
    """Runs of one stage within one wave, handed out together (one Slurm array)."""

    wave: int
    """Position of the wave among the plan's non-empty waves (``Plan.waves``)."""
    stage: str
    name: str
    """``<study>-<stage>-w<wave>``: how the dry run names the array."""
    runs: tuple[RunSpec, ...]


def arrays(plan: Plan, todo: list[RunSpec]) -> Iterator[Array]:
    """The arrays that hand out ``todo`` (a ``select(...).todo``), wave by wave, one per stage in plan order."""
    keys = {run.key for run in todo}
    for w, wave in enumerate(plan.waves()):
        for stage in dict.fromkeys(run.stage for run in wave):
            batch = tuple(run for run in wave if run.stage == stage and run.key in keys)
            if batch:
                yield Array(w, stage, f"{plan.study.name}-{stage}-w{w}", batch)


@dataclass(frozen=True)
class Handout:
    """One array of the walk: the runs handed out now, and those whose job from an earlier command still lives."""

    array: Array
    fresh: tuple[RunSpec, ...]
    reused: dict[str, str]
    """Run key -> id of its job, queued or running since an earlier command (not submitted again)."""


def handouts(plan: Plan, selection: Selection, active: dict[str, str]) -> Iterator[Handout]:
    """The walk itself: each array of ``selection.todo`` with its runs split into fresh and reused (``active``:
    run key -> live job id)."""
    for array in arrays(plan, selection.todo):
        fresh = tuple(run for run in array.runs if run.key not in active)
        yield Handout(array, fresh, {run.key: active[run.key] for run in array.runs if run.key in active})


def depends_on(runs: tuple[RunSpec, ...], job_of: dict[str, str]) -> list[str]:
    """The jobs (values of ``job_of``, run key -> job) the runs depend on, each once, in order."""
    return list(dict.fromkeys(job_of[dep] for run in runs for dep in run.depends_on if dep in job_of))


# States of a job that has not ended yet (SUBMITTED: our own state before the launcher first saw the job).
ACTIVE_STATES = frozenset(
    {
        "SUBMITTED",
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "PREEMPTED",
    }
)


def active_jobs(plan: Plan, launcher: launch.Launcher) -> dict[str, launch.JobRecord]:
    """Run key -> the record of every run of ``plan`` whose latest job is still pending or running.

    ``study submit`` (or ``study run``) a second time while the first one's jobs are queued or running would otherwise
    submit every unfinished run again: two jobs training in one run directory. The study's job registry, refreshed by
    the command's launcher (one squeue call on Slurm, the process table here), says which runs have a live job; the
    walk gives those runs their existing job instead of a new one: on Slurm, later runs then wait for it (afterany on
    its id); a blocking launcher waits for it to end and reads its result. ``--force`` submits them anyway (the run
    lock still keeps the two from writing the same directory at once)."""
    path = launch.registry_path(plan.study.root, plan.study.name)
    if not path.exists():
        return {}
    latest = {
        f"{rec.stage}/{rec.run_name}": rec for rec in launch.refresh(launch.Registry(path), {launcher.name: launcher})
    }
    return {key: rec for key, rec in latest.items() if rec.state in ACTIVE_STATES}


@dataclass(frozen=True)
class StudyOptions:
    """What a study command asks for: the CLI's options, parsed."""

    executor: str | None = None
    """Where the runs go; None: this machine for ``study run``, the cluster for ``study submit``."""
    only: tuple[str, ...] = ()
    """Stage names: only runs of these stages (empty: every run)."""
    profile: str | None = None
    container: str | None = None
    parallelism: int = 0
    """Jobs running at once: the array cap on Slurm (0: the profile's); worker processes here (0: one)."""
    rerun_stale: bool = False
    force: bool = False
    """Also hand out runs whose job of an earlier command is still queued or running."""
    target: str = RUN_TARGET
    """What each job calls (tests pass a stand-in)."""


@dataclass
class Preflight:
    """A checked study, ready to walk: nothing has been written yet."""

    plan: Plan
    options: StudyOptions
    launcher: launch.Launcher
    request: launch.LaunchRequest
    selection: Selection
    stale: list[Stale]
    active: dict[str, str]
    """Run key -> id of its live job from an earlier command."""
    to_build: list[DatasetJob] = field(default_factory=list)
    batches: dict[str, launch.Batch] = field(default_factory=dict)
    """Array name -> its fresh runs as the launcher checked them (what a dry run renders)."""

    def handouts(self):
        """The walk (``walk.handouts``): the same arrays for the run, the submission and the dry run."""
        return handouts(self.plan, self.selection, self.active)


def _only(values: tuple[str, ...]) -> set[str] | None:
    bad = [v for v in values if v not in STAGES]
    if bad:
        raise StudyError([f"--only {v}: not a stage; use one of {', '.join(STAGES)}" for v in bad])
    return set(values) or None


def _request(options: StudyOptions, blocking: bool) -> tuple[launch.Launcher, launch.LaunchRequest]:
    """The launcher (``blocking``: study run's, which waits for each array; else study submit's) and the request,
    its profile loaded and checked even when nothing is left to submit."""
    default = launch.THIS_MACHINE if blocking else launch.CLUSTER
    launcher = launch.launcher_for(options.executor or default, blocking=blocking)
    # On this machine 0 means one worker; a cluster's default cap is the profile's.
    parallelism = options.parallelism or (1 if launcher.blocking else None)
    request = launch.make_request(
        executor=launcher.name, profile=options.profile, container=options.container, array_parallelism=parallelism
    )
    launch.check_request(request)
    return launcher, request


def _check_stale(plan: Plan, path: Path, rerun_stale: bool) -> list[Stale]:
    stale = stale_in_plan(plan)
    if stale and not rerun_stale:
        raise StudyError(stale_lines(stale, str(path)))
    return stale


def _check_inputs(plan: Plan, selection: Selection, to_build: list[DatasetJob]) -> None:
    """What each run to hand out reads and is already there: shards already built, finished runs it loads (their
    checkpoints whole and unchanged). Runs of this study still to come, and shards still to build, are not checked."""
    todo = {run.key for run in selection.todo}
    building = {Path(ds.shards).absolute() for ds in to_build}
    for run in selection.todo:
        shards_pending = Path(run.cfg.data.shards).absolute() in building
        runs_pending = any(dep in todo for dep in run.depends_on)
        if not (shards_pending and runs_pending):
            check_inputs(run.stage, run.cfg, runs_may_be_pending=runs_pending, shards_may_be_pending=shards_pending)


def _check_arrays(pre: Preflight, dry_run: bool) -> None:
    """The launcher's own checks of every array (partition, nodes, ...): the same ``launch.prepare`` a submission
    makes, without the dependencies, which are jobs this walk has not submitted yet."""
    for handout in pre.handouts():
        if handout.fresh:
            _, pre.batches[handout.array.name] = launch.prepare(
                handout.array.stage,
                [run.cfg for run in handout.fresh],
                pre.request,
                None,
                array=True,
                dry_run=dry_run,
                target=pre.options.target,
                launcher=pre.launcher,
                check_inputs=False,
            )


def preflight(path: Path, options: StudyOptions, *, blocking: bool, dry_run: bool = False) -> Preflight:
    """Every check of a study command, in order (module docstring); a StudyError or LaunchError line at the first
    that fails. ``blocking``: the command waits for its runs (study run) or hands them to a scheduler (submit)."""
    plan = load_plan(path)
    only = _only(options.only)
    launcher, request = _request(options, blocking)
    stale = _check_stale(plan, path, options.rerun_stale)
    stale_dirs = {Path(s.path).absolute() for s in stale}
    selection = select(plan, only, redo=frozenset(r.key for r in plan.runs if r.run_dir.absolute() in stale_dirs))
    to_build = [ds for ds in plan.datasets if not has_index(ds.shards) or Path(ds.shards).absolute() in stale_dirs]
    _check_inputs(plan, selection, to_build)
    active = {} if options.force else {key: rec.job_id for key, rec in active_jobs(plan, launcher).items()}
    pre = Preflight(plan, options, launcher, request, selection, stale, active, to_build)
    _check_arrays(pre, dry_run)
    return pre
