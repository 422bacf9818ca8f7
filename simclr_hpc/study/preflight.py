"""Every check of ``study run``, ``study submit`` and ``study submit --dry-run``, in one order, before anything is
printed or written. All three commands call :func:`preflight`; a dry run therefore fails exactly where a submission
would, and prints the job list the submission would make.

The order: the study file (schema, references between its sections, every run config), ``--only``, the executor and
its profile, stale shards and results, what each run reads that is already there (finished runs, checkpoints), the
jobs of earlier commands still queued or running, and the launcher's own checks of each array (partition, nodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simclr_hpc import launch
from simclr_hpc.config import STAGES
from simclr_hpc.data.index import has_index
from simclr_hpc.launch.task import RUN_TARGET
from simclr_hpc.references import check_inputs
from simclr_hpc.study.activejobs import active_jobs
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.provenance import Stale, stale_in_plan, stale_lines
from simclr_hpc.study.runs import DatasetJob, Plan
from simclr_hpc.study.schema import StudyError
from simclr_hpc.study.walk import Handout, Selection, handouts, select


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
    launcher = launch.launcher(options.executor or default, blocking=blocking)
    # On this machine 0 means one worker; a cluster's default cap is the profile's.
    parallelism = options.parallelism or (1 if launcher.blocking else None)
    request = launch.make_request(executor=launcher.name, profile=options.profile, container=options.container,
                                  array_parallelism=parallelism)
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
            check_inputs(run.stage, run.cfg, runs_may_be_pending=runs_pending,
                             shards_may_be_pending=shards_pending)


def _check_arrays(pre: Preflight, dry_run: bool) -> None:
    """The launcher's own checks of every array (partition, nodes, ...): the same ``launch.prepare`` a submission
    makes, without the dependencies, which are jobs this walk has not submitted yet."""
    for handout in pre.handouts():
        if handout.fresh:
            _, pre.batches[handout.array.name] = launch.prepare(
                handout.array.stage, [run.cfg for run in handout.fresh], pre.request, None, array=True,
                dry_run=dry_run, target=pre.options.target, launcher=pre.launcher, check_inputs=False)


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


__all__ = ["Handout", "Preflight", "StudyOptions", "preflight"]
