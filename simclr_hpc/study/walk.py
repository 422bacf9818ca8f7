"""The one walk of a plan's waves: which runs are handed out, grouped into which arrays, in which order.

``study run``, ``study submit`` and the dry run (its lines and its sbatch scripts) all take their arrays from
:func:`handouts`, so what a dry run prints is what a submission does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from simclr_hpc.study.aggregate import read_result
from simclr_hpc.study.runs import Plan, RunSpec


def is_done(run: RunSpec) -> bool:
    """A run is done when its result.json exists and parses (written atomically by the runner)."""
    return read_result(run.result_path) is not None


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
