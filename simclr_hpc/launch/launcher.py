"""The one interface where executors differ: a :class:`Launcher` (Slurm, submitit's local executor, this process).

Chosen once per command from the executor's name (``launch.submit.launcher_for``), like submitit's ``AutoExecutor``;
nothing outside ``launch/`` asks which one it has. What differs between them is exactly these members:

- ``blocking``: whether a walker of a graph of runs (the study) must wait for an array to end before it submits the
  runs that depend on it, because no scheduler orders them;
- ``check``: what this launcher refuses (no Slurm, an unknown partition, several nodes on this machine, a dependency
  that does not exist) and which dependencies are still to wait for;
- ``submit_one`` / ``submit_array``: hand the jobs out; ``initial_state``: the state a record starts in;
- ``chunks``: the arrays a sweep becomes (``array_chunks`` below), walked by the dry run and the submission alike;
- ``requeue_budget``: how often a job may requeue itself after losing a rank;
- ``states`` / ``cancel``: where a job's state comes from, and how it is stopped.

How a sweep becomes Slurm arrays: a site accepts arrays of at most ``max_array_size`` tasks; a larger sweep becomes
several arrays, each waiting (``afterany``) for the one before it, so the parallelism cap holds over the whole sweep.
``array_chunks`` yields one :class:`Chunk` per array with its own copy of the job spec (the dependency written in); it
changes nothing it is given. The dry run names the previous array's job by a placeholder, the submission by the id
sbatch returned.

No torch import here.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from simclr_hpc import fsutil, rundir
from simclr_hpc.config import Config, dump_config
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.jobspec import JobSpec, render_sbatch
from simclr_hpc.launch.profile import Profile
from simclr_hpc.launch.registry import JobRecord
from simclr_hpc.launch.slurm import JOB_ID, Seen


@dataclass(frozen=True)
class Dependency:
    """Jobs a submission waits for: ``afterok`` (they must succeed) or ``afterany`` (they must have ended)."""

    kind: str = "afterok"
    ids: tuple[str, ...] = ()

    def sbatch(self) -> str | None:
        """``afterok:12:13`` (sbatch's ``--dependency``), or None without ids."""
        return f"{self.kind}:{':'.join(self.ids)}" if self.ids else None

    def keeping(self, ids: list[str]) -> Dependency:
        return replace(self, ids=tuple(ids))


def parse_dependency(items: list[str] | str | None) -> list[str]:
    """``["afterok:12:13", "14"]`` or ``"afterok:12"`` -> ``["12", "13", "14"]``. Only ``afterok`` is accepted."""
    if not items:
        return []
    if isinstance(items, str):
        items = [items]
    ids: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            kind, sep, rest = part.partition(":")
            if sep and kind != "afterok":
                raise LaunchError(f"--dependency {part!r}: only afterok:JOBID[:JOBID...] is supported")
            for jid in (rest if sep else part).split(":"):
                if not JOB_ID.match(jid):
                    raise LaunchError(f"--dependency {part!r}: {jid!r} is not a Slurm job id (digits, or ID_INDEX)")
                ids.append(jid)
    return list(dict.fromkeys(ids))


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


def array_chunks(
    spec: JobSpec, n_runs: int, max_size: int, dependency: str | None, job_of: Callable[[int], str]
) -> Iterator[Chunk]:
    """The arrays of a sweep of ``n_runs`` runs, at most ``max_size`` each, in order.

    ``dependency``: what every array waits for (``afterany:12`` ...). ``job_of(k)``: the job id of array ``k``,
    asked only once that array has been yielded (a submission appends the id sbatch gave it; a dry run answers with a
    placeholder). ``spec`` is not changed: each chunk carries a copy.
    """
    for k, start in enumerate(range(0, n_runs, max_size)):
        chain = f"afterany:{job_of(k - 1)}" if k else None
        yield Chunk(
            k, range(start, min(n_runs, start + max_size)), spec.with_dependency(join_dependencies(dependency, chain))
        )


def array_stamp() -> str:
    """The time stamp in a sweep's log folders: one maker for the dry run and the submission, so the dry run prints
    the folder naming the submission would use (microseconds: two sweeps of one second do not collide)."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


@dataclass(frozen=True)
class Batch:
    """What a launcher hands out: runs of one stage (checked, ``run.root`` absolute) with their job spec."""

    stage: str
    cfgs: tuple[Config, ...]
    spec: JobSpec
    dependency: Dependency
    target: str
    """``module:function`` every job calls with ``(stage, cfg)``: the runner, or a test's stand-in."""


def write_submitted_config(stage: str, cfg: Config) -> None:
    """``<run_dir>/config.submitted.yaml``: what the job was submitted with, for a human and ``slurm/array.sbatch``."""
    run_dir = cfg.run_dir(stage)
    run_dir.mkdir(parents=True, exist_ok=True)
    fsutil.write_text_atomic(rundir.submitted_config_path(run_dir), dump_config(cfg))


def stage_log_dir(stage: str, cfg: Config) -> Path:
    """submitit's folder of a single job: ``<run_dir>/slurm``."""
    return cfg.run_dir(stage) / "slurm"


def array_log_dir(stage: str, cfg: Config, stamp: str, k: int) -> Path:
    return rundir.array_log_dir(cfg.run.root, cfg.run.study, stage, stamp, k)


class Launcher(ABC):
    """Where the jobs of a stage run; see the module docstring for what differs and why."""

    name: ClassVar[str]
    """The executor's name: ``--executor NAME``, and the ``executor`` column of the job registry."""
    help: ClassVar[str]
    """One line for ``--help``."""
    blocking: ClassVar[bool]
    """True: jobs are not ordered by a scheduler; a study waits for each array to end before the next."""

    def check(self, batch: Batch, dry_run: bool) -> Batch:
        """Refuse what this launcher cannot run (a LaunchError naming the fix); return the batch with only the
        dependencies still to wait for. A dry run is checked the same, minus what needs the scheduler itself."""
        if batch.spec.nodes > 1:
            raise LaunchError(
                f"--nodes {batch.spec.nodes}: the {self.name} executor runs on this machine only; "
                "use --nodes 1 or the slurm executor"
            )
        return batch

    def requeue_budget(self, profile: Profile) -> int:
        """How often a job may requeue itself after a rank was lost (only a scheduler can requeue)."""
        return 0

    def initial_state(self, run_dir: Path) -> str:
        """The state a job's record starts in."""
        return "SUBMITTED"

    def max_array_size(self, spec: JobSpec) -> int:
        """The most tasks one array may have."""
        return spec.profile.max_array_size

    def chunks(self, batch: Batch, job_of) -> Iterator[Chunk]:
        """The arrays of ``batch`` (``array_chunks``): what ``render`` prints and a scheduler submits."""
        return array_chunks(
            batch.spec, len(batch.cfgs), self.max_array_size(batch.spec), batch.dependency.sbatch(), job_of
        )

    def render(self, batch: Batch, stamp: str, array: bool) -> list[str]:
        """The dry run: the exact sbatch script(s) a cluster would get for ``batch`` (Slurm is where every study
        ends up; the local executors run the same jobs with the same settings)."""
        cfg = batch.cfgs[0]
        if not array:
            return [
                render_sbatch(batch.spec.with_dependency(batch.dependency.sbatch()), stage_log_dir(batch.stage, cfg))
            ]
        return [
            render_sbatch(chunk.spec, array_log_dir(batch.stage, cfg, stamp, chunk.index), len(chunk.runs))
            for chunk in self.chunks(batch, lambda k: f"<job id of array {k}>")
        ]

    @abstractmethod
    def submit_one(self, batch: Batch) -> JobRecord:
        """Submit the batch's one run as one job (``spec.nodes`` nodes, one task per GPU); its record, not yet added
        to the registry."""

    @abstractmethod
    def submit_array(self, batch: Batch, stamp: str) -> list[JobRecord]:
        """Submit every run of the batch as one sweep; their records in the batch's order, not yet in the registry."""

    @abstractmethod
    def states(self, records: list[JobRecord]) -> dict[int, Seen]:
        """The current state of each unfinished record (by record id), as far as this launcher can tell."""

    def cancel(self, record: JobRecord) -> bool:
        """Stop the record's job; True when it was stopped (or had already ended)."""
        return True

    def record(
        self,
        batch: Batch,
        cfg: Config,
        job_id: str,
        folder: Path | None,
        *,
        array_job_id: str | None = None,
        array_index: int | None = None,
        dependency: str | None = None,
    ) -> JobRecord:
        """The registry row of one run handed out as job ``job_id`` (logs in submitit's ``folder``, if any)."""
        from simclr_hpc.launch.registry import log_paths

        out, err = log_paths(folder, job_id) if folder else ("", "")
        run_dir = cfg.run_dir(batch.stage)
        return JobRecord(
            study=cfg.run.study,
            stage=batch.stage,
            run_name=cfg.run.name,
            job_id=str(job_id),
            executor=self.name,
            state=self.initial_state(run_dir),
            run_dir=str(run_dir),
            log_dir=str(folder or ""),
            stdout=str(out),
            stderr=str(err),
            config_hash=cfg.hash(batch.stage),
            array_job_id=array_job_id,
            array_index=array_index,
            dependency=dependency or "",
            nodes=batch.spec.nodes,
            tasks=batch.spec.nodes * batch.spec.tasks_per_node,
        )
