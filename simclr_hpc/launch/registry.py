"""The job registry: ``<run.root>/<study>/registry.sqlite``, one row per submitted run.

Every submission is recorded before ``submit`` returns (stage, run name, array index, Slurm job id, state, paths).
``refresh`` updates the states of unfinished rows from, in order: ``squeue`` (queued/running), ``scontrol show job``
(finished recently, no accounting needed), ``sacct`` (accounting), and finally the run's ``result.json`` (its presence
means COMPLETED), so it works when accounting is off. Local-executor jobs are checked by their process id.

A registry that cannot be used (a directory in its place, a corrupt or truncated file, one locked past the wait, one
on a read-only file system, one written by a newer simclr-hpc) is one :class:`RegistryError` line naming the file and
what to do, never a traceback: :meth:`Registry._open` is the one place that turns SQLite's errors into it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simclr_hpc import rundir
from simclr_hpc.fsutil import pid_alive, sha256_file
from simclr_hpc.launch import slurm
from simclr_hpc.launch.errors import RegistryError, sqlite_problem

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study TEXT NOT NULL,
    stage TEXT NOT NULL,
    run_name TEXT NOT NULL,
    job_id TEXT NOT NULL,
    array_job_id TEXT,
    array_index INTEGER,
    executor TEXT NOT NULL,
    state TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    log_dir TEXT NOT NULL,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    result_hash TEXT,
    dependency TEXT NOT NULL DEFAULT '',
    nodes INTEGER NOT NULL DEFAULT 1,
    tasks INTEGER NOT NULL DEFAULT 1,
    submitted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_job_id ON jobs (job_id);
"""
SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the registries this version writes (0: written before versions were recorded). A
registry of a higher version comes from a newer simclr-hpc and is refused rather than misread."""
LOCK_WAIT_S = 30


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class JobRecord:
    """One submitted run, as the registry holds it."""

    study: str
    stage: str
    run_name: str
    job_id: str
    """Slurm job id (``123``, or ``123_4`` for an array task); the process id for the local executor."""
    executor: str
    state: str
    run_dir: str
    log_dir: str
    stdout: str
    stderr: str
    config_hash: str
    array_job_id: str | None = None
    array_index: int | None = None
    result_hash: str | None = None
    dependency: str = ""
    nodes: int = 1
    tasks: int = 1
    submitted_at: str = dataclasses.field(default_factory=_now)
    updated_at: str = dataclasses.field(default_factory=_now)
    id: int | None = None

    @property
    def result_path(self) -> Path:
        return rundir.result_path(self.run_dir)

    @property
    def finished(self) -> bool:
        return self.state in slurm.TERMINAL_STATES

    @property
    def registry(self) -> "Registry":
        """The registry this record lives in (``<root>/<study>/registry.sqlite``, root taken from run_dir)."""
        return Registry(Path(self.run_dir).parents[1] / "registry.sqlite")

    def wait(self, poll_s: float = 1.0, timeout_s: float | None = None) -> str:
        """Block until the job has finished (any terminal state) and return that state; refreshes the registry.

        For the local executor and for tests; ``submit`` itself never waits. Raises TimeoutError after ``timeout_s``.
        """
        start = time.monotonic()
        while True:
            for rec in self.registry.refresh():
                if rec.id == self.id:
                    self.state, self.result_hash, self.updated_at = rec.state, rec.result_hash, rec.updated_at
            if self.finished:
                return self.state
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise TimeoutError(f"job {self.job_id} still {self.state} after {timeout_s:.0f} s")
            time.sleep(poll_s)


_FIELDS = [f.name for f in dataclasses.fields(JobRecord) if f.name != "id"]


def registry_path(root: str | Path, study: str) -> Path:
    """``<root>/<study>/registry.sqlite``."""
    return Path(root) / study / "registry.sqlite"


class Registry:
    """The SQLite file of one study. Opened per call (jobs and the CLI may write concurrently; SQLite locks)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=LOCK_WAIT_S)
        con.row_factory = sqlite3.Row
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            con.close()
            raise RegistryError(f"{self.path}: job registry written by a newer simclr-hpc (schema {version}; this one "
                                f"reads up to {SCHEMA_VERSION}); use that version, or another run.root")
        con.executescript(SCHEMA)
        if version < SCHEMA_VERSION:
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return con

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction (committed on leaving the block); every SQLite or file-system error of the
        registry becomes one RegistryError line naming it."""
        try:
            con = self._connect()
            try:
                with con:
                    yield con
            finally:
                con.close()
        except sqlite3.Error as err:
            raise RegistryError(sqlite_problem(self.path, err, LOCK_WAIT_S)) from None
        except OSError as err:
            raise RegistryError(f"{self.path}: cannot use the job registry ({err.strerror or err}); check that "
                                f"{self.path.parent} is a writable directory") from None

    def check_writable(self) -> None:
        """RegistryError now if an existing registry could not record a job (corrupt, locked, read-only, newer):
        called before a submission, so that no job runs unrecorded."""
        if self.path.exists() or self.path.is_symlink():
            with self._open() as con:
                # A write that changes nothing: takes the write lock, so a read-only or locked file fails here.
                con.execute("UPDATE jobs SET id = id WHERE 0")

    def add(self, records: list[JobRecord]) -> list[JobRecord]:
        """Insert records; sets their ``id``."""
        with self._open() as con:
            for rec in records:
                cur = con.execute(
                    f"INSERT INTO jobs ({', '.join(_FIELDS)}) VALUES ({', '.join('?' for _ in _FIELDS)})",
                    [getattr(rec, f) for f in _FIELDS],
                )
                rec.id = cur.lastrowid
        return records

    def all(self) -> list[JobRecord]:
        """Every row, oldest first."""
        if not self.path.exists():
            return []
        with self._open() as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        known = set(_FIELDS) | {"id"}
        return [JobRecord(**{k: v for k, v in dict(row).items() if k in known}) for row in rows]

    def find(self, job_id: str) -> list[JobRecord]:
        """Rows of a job id; an array id (``123``) matches all its tasks (``123_0``, ``123_1``, ...)."""
        return [r for r in self.all() if r.job_id == job_id or r.array_job_id == job_id]

    def _update(self, records: list[JobRecord]) -> None:
        with self._open() as con:
            for rec in records:
                con.execute(
                    "UPDATE jobs SET state = ?, result_hash = ?, updated_at = ? WHERE id = ?",
                    (rec.state, rec.result_hash, rec.updated_at, rec.id),
                )

    def refresh(self) -> list[JobRecord]:
        """Update the state of every unfinished row (and the result hash of finished ones); return all rows."""
        records = self.all()
        pending = [r for r in records if not r.finished or (r.state == "COMPLETED" and not r.result_hash)]
        if not pending:
            return records
        slurm_ids = [r.job_id for r in pending if r.executor == "slurm"]
        live = slurm.squeue_states() if slurm_ids else {}
        memory = slurm.scontrol_states() if slurm_ids else {}
        missing = [j for j in slurm_ids if j not in live and j not in memory]
        parents = sorted({j.split("_")[0] for j in missing if "_" in j})
        accounted = slurm.sacct_states(missing + parents) if missing else {}
        changed = []
        for rec in pending:
            state = rec.state
            if rec.executor == "slurm":
                found = (live.get(rec.job_id) or memory.get(rec.job_id) or accounted.get(rec.job_id)
                         or slurm.array_parent_state(rec.job_id, memory, accounted))
                state = found or state
                if not found:
                    # Slurm has forgotten the job and accounting is off: result.json decides.
                    state = "COMPLETED" if rec.result_path.exists() else "ENDED"
            elif rec.result_path.exists():
                state = "COMPLETED"  # a local worker runs several runs: each is done when it wrote its result
            else:
                state = "RUNNING" if pid_alive(rec.job_id) else "FAILED"
            if state == "COMPLETED" and rec.result_path.exists():
                rec.result_hash = sha256_file(rec.result_path)[:16]
            if state != rec.state or rec.result_hash:
                rec.state = state
                rec.updated_at = _now()
                changed.append(rec)
        self._update(changed)
        return records

    def set_state(self, job_ids: list[str], state: str) -> None:
        """Mark rows (by job id or array id) with a state, e.g. CANCELLED right after scancel."""
        with self._open() as con:
            for jid in job_ids:
                con.execute(
                    "UPDATE jobs SET state = ?, updated_at = ? WHERE (job_id = ? OR array_job_id = ?) AND state NOT IN "
                    f"({', '.join('?' for _ in slurm.TERMINAL_STATES)})",
                    (state, _now(), jid, jid, *sorted(slurm.TERMINAL_STATES)),
                )


def study_registries(root: str | Path, study: str | None = None) -> list[Registry]:
    """The registry of one study, or of every study under ``root``."""
    root = Path(root)
    if study:
        return [Registry(registry_path(root, study))]
    return [Registry(p) for p in sorted(root.glob("*/registry.sqlite"))]


def find_job(root: str | Path, job_id: str) -> list[tuple[Registry, JobRecord]]:
    """Every (registry, row) of a job id or array id, across all studies under ``root``."""
    return [(reg, rec) for reg in study_registries(root) for rec in reg.find(job_id)]


def log_paths(folder: str | Path, job_id: str, task: int = 0) -> tuple[Path, Path]:
    """submitit's stdout/stderr paths of one task of a job (``<folder>/<id>_<task>_log.out|err``)."""
    return (Path(folder) / f"{job_id}_{task}_log.out", Path(folder) / f"{job_id}_{task}_log.err")



def cancel_records(pairs: list[tuple[Registry, JobRecord]]) -> list[str]:
    """Cancel unfinished jobs (scancel for Slurm, SIGTERM to the controller for local ones); mark them CANCELLED."""
    import signal

    done = []
    for reg, rec in pairs:
        if rec.finished:
            continue
        if rec.executor == "slurm":
            proc = slurm.scancel([rec.job_id])
            if proc is None or proc.returncode != 0:
                continue
        elif pid_alive(rec.job_id):
            try:
                os.kill(int(rec.job_id), signal.SIGTERM)
            except ProcessLookupError:
                pass
        reg.set_state([rec.job_id], "CANCELLED")
        done.append(rec.job_id)
    return done
