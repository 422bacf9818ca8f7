"""The one walk of a plan's waves: which runs are handed out, grouped into which arrays, in which order.

``study run`` and ``study submit`` (``engine.run_plan``), the dry run's lines (``engine.dry_run_lines``) and its sbatch
scripts (``cli/study``) all take their arrays from :func:`arrays`, so what a dry run prints is what a submission does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

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


def select(plan: Plan, only: set[str] | None = None) -> Selection:
    """The runs ``only`` selects, in plan order, split by whether they are done."""
    selection = Selection([], [])
    for run in plan.runs:
        if is_selected(run, only):
            (selection.done if is_done(run) else selection.todo).append(run)
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
