"""The job registry: ``<run.root>/<study>/registry.sqlite``, one row per submitted run. Storage only: how states are
learnt from Slurm or the process table is each launcher's (``launch/jobs.py`` asks them).

Every submission is recorded before ``submit`` returns (stage, run name, array index, job id, state, paths). A job that
fails writes its one-line reason into its own row (``record_failure``), so ``jobs`` and ``study status`` say why.

Why SQLite's ``unix-dotfile`` VFS: the registry lives beside the runs, on the cluster's shared file system (Lustre,
GPFS, NFS), where POSIX advisory locks (``fcntl``, SQLite's default) are often missing or not coherent across nodes,
and SQLite then fails with "disk I/O error" or corrupts the file. The dotfile VFS locks by creating a directory
``registry.sqlite.lock`` (``mkdir`` is atomic on every one of them, NFS included), at the price of one writer *or*
reader at a time, which a registry of short transactions does not notice. Every connection of ours uses it; another
program opening the file with the default VFS would not see our locks, so inspect a copy. A process killed inside a
transaction leaves the lock directory behind: one older than ``STALE_LOCK_S`` is removed (no transaction of ours
lasts a second) and the call is tried again.

A registry that cannot be used (a directory in its place, a corrupt or truncated file, one locked past the wait, one
on a read-only file system, one written by a newer simclr-hpc) is one :class:`RegistryError` line naming the file and
what to do, never a traceback: :meth:`Registry._open` is the one place that turns SQLite's errors into it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simclr_hpc import rundir
from simclr_hpc.launch.errors import RegistryError, sqlite_problem
from simclr_hpc.launch.slurm import TERMINAL_STATES

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
    updated_at TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_job_id ON jobs (job_id);
"""
SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the registries this version writes (0: written before versions were recorded; 1: before
failed jobs recorded their ``reason``, a column added on first use). A registry of a higher version comes from a
newer simclr-hpc and is refused rather than misread."""
LOCK_WAIT_S = 30
STALE_LOCK_S = 120.0
"""A lock directory older than this belongs to a process that died inside a transaction."""


def now_utc() -> str:
    """The time a row is stamped with (UTC, ISO 8601, whole seconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class JobRecord:
    """One submitted run, as the registry holds it."""

    study: str
    stage: str
    run_name: str
    job_id: str
    """Slurm job id (``123``, or ``123_4`` for an array task); the worker's process id for a local job."""
    executor: str
    """The launcher that runs it (``launch.submit.EXECUTORS``)."""
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
    submitted_at: str = dataclasses.field(default_factory=now_utc)
    updated_at: str = dataclasses.field(default_factory=now_utc)
    reason: str = ""
    """Why the job failed or was cancelled (its own one-line error, or Slurm's reason); empty otherwise."""
    id: int | None = None

    @property
    def result_path(self) -> Path:
        return rundir.result_path(self.run_dir)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def registry_path(self) -> Path:
        """The registry this record lives in (``<root>/<study>/registry.sqlite``, root taken from run_dir)."""
        return rundir.registry_path(Path(self.run_dir).parents[2], self.study)


_FIELDS = [f.name for f in dataclasses.fields(JobRecord) if f.name != "id"]


def registry_path(root: str | Path, study: str) -> Path:
    """``<root>/<study>/registry.sqlite``."""
    return rundir.registry_path(root, study)


class Registry:
    """The SQLite file of one study. Opened per call (jobs and the CLI may write concurrently; the dotfile lock
    serialises them)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(f"file:{self.path}?vfs=unix-dotfile", uri=True, timeout=LOCK_WAIT_S)
        con.row_factory = sqlite3.Row
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            con.close()
            raise RegistryError(
                f"{self.path}: job registry written by a newer simclr-hpc (schema {version}; this one "
                f"reads up to {SCHEMA_VERSION}); use that version, or another run.root"
            )
        con.executescript(SCHEMA)
        if version < SCHEMA_VERSION:
            if "reason" not in {row["name"] for row in con.execute("PRAGMA table_info(jobs)")}:
                con.execute("ALTER TABLE jobs ADD COLUMN reason TEXT NOT NULL DEFAULT ''")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return con

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction (committed on leaving the block); every SQLite or file-system error of the
        registry becomes one RegistryError line naming it. A lock left by a dead process is cleared first."""
        self._clear_stale_lock()
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
            raise RegistryError(
                f"{self.path}: cannot use the job registry ({err.strerror or err}); check that "
                f"{self.path.parent} is a writable directory"
            ) from None

    def _clear_stale_lock(self) -> None:
        lock = Path(f"{self.path}.lock")
        try:
            if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
                if lock.is_dir():
                    lock.rmdir()
                else:
                    lock.unlink()
        except OSError:
            pass  # no lock (the usual case), or another process took or cleared it first

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

    def update(self, records: list[JobRecord]) -> None:
        """Write back the state, result hash and reason of ``records`` (by id)."""
        if not records:
            return
        with self._open() as con:
            for rec in records:
                con.execute(
                    "UPDATE jobs SET state = ?, result_hash = ?, reason = ?, updated_at = ? WHERE id = ?",
                    (rec.state, rec.result_hash, rec.reason, rec.updated_at, rec.id),
                )

    def set_state(self, job_ids: list[str], state: str) -> None:
        """Mark unfinished rows (by job id or array id) with a state, e.g. CANCELLED right after scancel."""
        ended = sorted(TERMINAL_STATES)
        with self._open() as con:
            for jid in job_ids:
                con.execute(
                    "UPDATE jobs SET state = ?, updated_at = ? WHERE (job_id = ? OR array_job_id = ?) AND state NOT IN "
                    f"({', '.join('?' for _ in ended)})",
                    (state, now_utc(), jid, jid, *ended),
                )

    def record_failure(self, run_dir: str | Path, reason: str) -> bool:
        """Called by a failing job: write ``reason`` into the latest row of ``run_dir``. False when there is no row
        (yet: the submitter records a job right after sbatch returns, which a job failing at once may beat)."""
        with self._open() as con:
            cur = con.execute(
                "UPDATE jobs SET reason = ?, updated_at = ? WHERE id = (SELECT MAX(id) FROM jobs WHERE run_dir = ?)",
                (reason, now_utc(), str(run_dir)),
            )
            return cur.rowcount > 0


def study_registries(root: str | Path, study: str | None = None) -> list[Registry]:
    """The registry of one study, or of every study under ``root``."""
    if study:
        return [Registry(registry_path(root, study))]
    return [Registry(p) for p in sorted(Path(root).glob(f"*/{rundir.REGISTRY}"))]


def find_job(root: str | Path, job_id: str) -> list[tuple[Registry, JobRecord]]:
    """Every (registry, row) of a job id or array id, across all studies under ``root``."""
    return [(reg, rec) for reg in study_registries(root) for rec in reg.find(job_id)]


def log_paths(folder: str | Path, job_id: str, task: int = 0) -> tuple[Path, Path]:
    """submitit's stdout/stderr paths of one task of a job (``<folder>/<id>_<task>_log.out|err``)."""
    return (Path(folder) / f"{job_id}_{task}_log.out", Path(folder) / f"{job_id}_{task}_log.err")
