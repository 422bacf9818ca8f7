"""One writer per run directory: ``<run_dir>/.lock``, taken before anything is written, released on exit.

The lock file holds who took it (host, pid, the process's start time, Slurm job id, when) as one JSON object. It is
taken over only when its holder is provably gone: a dead process on this host (or a live pid that is another process,
told by its start time), the same Slurm job as ours (a requeued job is the same job id starting again), or a Slurm job
that ``job_alive`` says is no longer pending or running. Anything else is refused with one line naming the holder.

Primitive, and why: run directories live on the network file systems of clusters (NFS, Lustre, GPFS). ``flock`` and
``fcntl`` locks are unreliable there (NFS emulates them with a lock daemon that is often missing or not shared between
clients, Lustre only honours them when mounted with ``-o flock``) and they vanish with the process, so they cannot
name a holder. Instead the holder writes its record to a unique file beside the lock and ``link(2)``s it to ``.lock``:
link is atomic on every one of these file systems (including NFSv2/v3, where ``O_CREAT|O_EXCL`` is not guaranteed;
see open(2), O_EXCL), it fails if ``.lock`` exists, and the lock file is whole the moment it appears (no reader sees a
half-written record). After an NFS error the unique file's link count tells whether the link happened anyway.
A takeover is serialised by a second lock of the same kind (``.lock.takeover``) and re-reads the stale record before
removing it, so two processes that both see a dead holder cannot both win.

No torch here: the runner takes it before any process group starts; ``launch`` supplies ``job_alive`` (only it knows
Slurm).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from simclr_hpc.fsutil import write_failed
from simclr_hpc.outputs import make_dir
from simclr_hpc.readers import UserError

LOCK_FILE = ".lock"


class RunLocked(UserError):
    """Another live process (or job) holds the run directory."""


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/PID/stat field 22), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    except OSError:
        return ""  # exists but unreadable: alive as far as we can tell
    return None if fields[0] == "Z" else fields[19]


def holder_record() -> dict:
    """Who we are, as written into the lock file."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": _start_time(pid),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID") or None,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }


def describe(rec: dict) -> str:
    """``host H pid P (Slurm job J) since T`` for messages."""
    job = f" (Slurm job {rec['slurm_job_id']})" if rec.get("slurm_job_id") else ""
    return f"host {rec.get('host')} pid {rec.get('pid')}{job} since {rec.get('started_at')}"


def holder_gone(rec: dict, job_alive: Callable[[str], bool | None] | None = None) -> bool:
    """True only when the holder of ``rec`` provably no longer runs (see the module docstring)."""
    job = rec.get("slurm_job_id")
    if job and job == os.environ.get("SLURM_JOB_ID"):
        return True  # our own job, started again after a requeue: its earlier run is over
    if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int):
        start = _start_time(rec["pid"])
        if start is None or (rec.get("pid_start") and start and start != rec["pid_start"]):
            return True
        return False
    if job and job_alive is not None:
        return job_alive(job) is False
    return False


def _read(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: a holder we cannot judge, never taken over silently
    return rec if isinstance(rec, dict) else {}


def _link_lock(path: Path, rec: dict) -> bool:
    """Atomically create ``path`` holding ``rec``; False if it exists. See the module docstring for why link(2)."""
    tmp = path.with_name(f"{path.name}.{rec['host']}.{rec['pid']}.{rec['token'][:8]}")
    try:
        tmp.write_text(json.dumps(rec))
    except OSError as err:  # a full disk or a read-only run directory: one line naming the lock file
        tmp.unlink(missing_ok=True)
        raise write_failed(path, err) from err
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        return os.stat(tmp).st_nlink == 2  # NFS: the reply was lost but the link may have been made
    finally:
        tmp.unlink(missing_ok=True)


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.lock`` for the block; raises RunLocked if a live holder has it.

    Directories it had to create for the lock are removed again on release when they are still empty, so a run that
    is refused after taking the lock leaves nothing behind.
    """

    def __init__(
        self, run_dir: str | Path, job_alive: Callable[[str], bool | None] | None = None, what: str = "run directory"
    ):
        self.run_dir, self.what = Path(run_dir), what
        self.path = self.run_dir / LOCK_FILE
        self.job_alive = job_alive
        self.record = holder_record()
        self.created: list[Path] = []

    def _mkdirs(self) -> None:
        missing = [p for p in [self.run_dir, *self.run_dir.parents] if not p.exists()]
        make_dir(self.run_dir, self.what)
        self.created = missing  # deepest first

    def acquire(self) -> None:
        """Take the lock, taking it over from a holder that is gone; RunLocked naming a live holder."""
        self._mkdirs()
        for _ in range(3):
            if _link_lock(self.path, self.record):
                return
            held = _read(self.path)
            if held is None:
                continue  # released between our link and our read: try again
            if not holder_gone(held, self.job_alive):
                self._cleanup_dirs()
                who = describe(held) if held else "a holder whose lock file is unreadable"
                raise RunLocked(
                    f"{self.run_dir}: another run is writing here ({who}); wait for it to end, or if it "
                    f"is gone for sure, delete {self.path}"
                )
            self._take_over(held)
        self._cleanup_dirs()
        raise RunLocked(f"{self.run_dir}: could not take {self.path} (it keeps changing); try again")

    def _take_over(self, held: dict) -> None:
        """Remove the stale lock ``held``, under ``.lock.takeover`` so that only one process does it."""
        guard = self.path.with_name(LOCK_FILE + ".takeover")
        if not _link_lock(guard, self.record):
            stale = _read(guard)
            if stale is not None and holder_gone(stale, self.job_alive):
                guard.unlink(missing_ok=True)
            time.sleep(0.2)
            return
        try:
            if _read(self.path) == held:
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if it is still ours, then any directory the lock created that is still empty."""
        if _read(self.path) == self.record:
            self.path.unlink(missing_ok=True)
        self._cleanup_dirs()

    def _cleanup_dirs(self) -> None:
        for path in self.created:
            try:
                path.rmdir()
            except OSError:
                break  # not empty (the run wrote something) or not ours to remove

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
