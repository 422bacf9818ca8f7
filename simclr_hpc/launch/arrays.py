"""How a sweep becomes Slurm arrays: the one chunk generator that both the dry run and the submission walk.

A site accepts arrays of at most ``max_array_size`` tasks; a larger sweep becomes several arrays, each waiting
(``afterany``) for the one before it, so the parallelism cap holds over the whole sweep. ``array_chunks`` yields one
:class:`Chunk` per array with its own copy of the job spec (the dependency written in); it changes nothing it is given.
The dry run names the previous array's job by a placeholder, the submission by the id sbatch returned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from simclr_hpc.launch.jobspec import JobSpec


@dataclass(frozen=True)
class Chunk:
    """One Slurm array of a sweep: positions ``runs`` of the sweep's configs, submitted with ``spec``."""

    index: int
    """0 for the first array of the sweep, 1 for the next, ..."""
    runs: range
    spec: JobSpec
    """The sweep's spec with this array's ``--dependency`` (the sweep's own, plus afterany on the previous array)."""


def join_dependencies(*parts: str | None) -> str | None:
    """``afterok:1:2`` and ``afterany:3`` -> ``afterok:1:2,afterany:3`` (sbatch: all must hold); None when empty."""
    return ",".join(p for p in parts if p) or None


def array_chunks(spec: JobSpec, n_runs: int, max_size: int, dependency: str | None,
                 job_of: Callable[[int], str]) -> Iterator[Chunk]:
    """The arrays of a sweep of ``n_runs`` runs, at most ``max_size`` each, in order.

    ``dependency``: what every array waits for (``afterany:12`` ...). ``job_of(k)``: the job id of array ``k``,
    asked only once that array has been yielded (a submission appends the id sbatch gave it; a dry run answers with a
    placeholder). ``spec`` is not changed: each chunk carries a copy.
    """
    for k, start in enumerate(range(0, n_runs, max_size)):
        chain = f"afterany:{job_of(k - 1)}" if k else None
        yield Chunk(k, range(start, min(n_runs, start + max_size)),
                    spec.with_dependency(join_dependencies(dependency, chain)))


def array_stamp() -> str:
    """The time stamp in a sweep's log folders: one maker for the dry run and the submission, so the dry run prints
    the folder naming the submission would use (microseconds: two sweeps of one second do not collide)."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
