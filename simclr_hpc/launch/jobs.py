"""Where recorded jobs stand: refresh the registry from each job's launcher, wait for jobs, cancel them.

Each record names its executor; its launcher is the one ``submit.EXECUTORS`` gives that name. A refresh asks each
launcher once for all its unfinished records, across every registry given (``simclr-hpc jobs`` over a whole run root
makes one squeue call, not one per study).
"""

from __future__ import annotations

import time
from collections import defaultdict

from simclr_hpc.fsutil import sha256_file
from simclr_hpc.launch.launcher import Launcher
from simclr_hpc.launch.registry import JobRecord, Registry, now_utc
from simclr_hpc.launch.slurm import TERMINAL_STATES
from simclr_hpc.launch.submit import EXECUTORS, THIS_MACHINE, launcher_for


def _launcher_of(record: JobRecord, launchers: dict[str, Launcher]) -> Launcher:
    """The record's launcher (one instance per name and call); a row of an executor no longer offered (``debug``)
    is judged as a job of this machine."""
    name = record.executor if record.executor in EXECUTORS else THIS_MACHINE
    if name not in launchers:
        launchers[name] = launcher_for(name)
    return launchers[name]


def refresh_all(registries: list[Registry], launchers: dict[str, Launcher] | None = None) -> list[JobRecord]:
    """Update every unfinished row (and the result hash of finished ones) of ``registries``; return all rows.
    ``launchers``: instances to ask (a command's own, with what it already knows); others are made as needed."""
    launchers = {} if launchers is None else dict(launchers)
    rows = [(reg, reg.all()) for reg in registries]
    pending: dict[str, list[JobRecord]] = defaultdict(list)
    for _, records in rows:
        for rec in records:
            if not rec.finished or (rec.state == "COMPLETED" and not rec.result_hash):
                pending[_launcher_of(rec, launchers).name].append(rec)
    changed: set[int] = set()
    for name, records in pending.items():
        states = launchers[name].states(records)
        for rec in records:
            seen = states.get(rec.id)
            state = seen.state if seen else rec.state
            # Slurm's reason says why a job ended (DependencyNeverSatisfied, NonZeroExitCode); a job's own, written
            # by the job itself, says more and is kept.
            reason = rec.reason or (seen.reason if seen and state in TERMINAL_STATES else "")
            if state == "COMPLETED" and rec.result_path.exists() and not rec.result_hash:
                rec.result_hash = sha256_file(rec.result_path)[:16]
            if state != rec.state or reason != rec.reason or rec.result_hash:
                rec.state, rec.reason, rec.updated_at = state, reason, now_utc()
                changed.add(id(rec))
    for reg, records in rows:
        reg.update([rec for rec in records if id(rec) in changed])
    return [rec for _, records in rows for rec in records]


def refresh(registry: Registry, launchers: dict[str, Launcher] | None = None) -> list[JobRecord]:
    """``refresh_all`` of one registry."""
    return refresh_all([registry], launchers)


def wait(records: list[JobRecord] | JobRecord, poll_s: float = 1.0, timeout_s: float | None = None):
    """Block until every record's job has ended; return their final states (one state for one record).

    For the blocking launchers (a study waits for each array) and for tests; ``submit`` itself never waits. Raises
    TimeoutError after ``timeout_s``.
    """
    single = isinstance(records, JobRecord)
    records = [records] if single else list(records)
    start = time.monotonic()
    while True:
        for registry_path in {rec.registry_path for rec in records if not rec.finished and rec.id is not None}:
            fresh = {r.id: r for r in refresh(Registry(registry_path))}
            for rec in records:
                if rec.id in fresh and rec.registry_path == registry_path:
                    new = fresh[rec.id]
                    rec.state, rec.result_hash, rec.reason, rec.updated_at = (
                        new.state,
                        new.result_hash,
                        new.reason,
                        new.updated_at,
                    )
        if all(rec.finished or rec.id is None for rec in records):
            states = [rec.state for rec in records]
            return states[0] if single else states
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            late = next(rec for rec in records if not rec.finished)
            raise TimeoutError(f"job {late.job_id} still {late.state} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def cancel(pairs: list[tuple[Registry, JobRecord]]) -> list[str]:
    """Cancel unfinished jobs through their launchers; mark them CANCELLED. Returns the job ids cancelled."""
    launchers: dict[str, Launcher] = {}
    done = []
    for reg, rec in pairs:
        if rec.finished or not _launcher_of(rec, launchers).cancel(rec):
            continue
        reg.set_state([rec.job_id], "CANCELLED")
        done.append(rec.job_id)
    return done
