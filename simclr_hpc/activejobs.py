"""Runs of a study whose job is still pending or running are not handed out again.

``study submit`` (or ``study run``) a second time while the first one's jobs are queued or running would otherwise
submit every unfinished run again: two jobs training in one run directory. The study's job registry, refreshed from
squeue/scontrol/sacct (or the process table for local jobs), says which runs have a live job; :class:`SkipActive` wraps
the engine's backend so that those runs get their existing job instead of a new one: on Slurm, later runs then wait
for it (afterok on its id); a blocking backend (local jobs) waits for it to end and reads its result. ``--force``
submits them anyway (the run lock still keeps the two from writing the same directory at once).
"""

from __future__ import annotations

from simclr_hpc.study.aggregate import read_jobs
from simclr_hpc.study.engine import Outcome

# Slurm states of a job that has not ended yet (SUBMITTED: our own state before squeue first saw the job).
ACTIVE_STATES = frozenset({"SUBMITTED", "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED",
                           "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING",
                           "STAGE_OUT", "PREEMPTED"})


def active_jobs(plan) -> dict[str, str]:
    """Run key -> job id of every run of ``plan`` whose latest job is still pending or running."""
    return {key: job["job_id"] for key, job in read_jobs(plan, refresh=True).items() if job["state"] in ACTIVE_STATES}


class SkipActive:
    """A backend that hands out only runs without a live job; the others get their existing job id."""

    def __init__(self, backend, active: dict[str, str], plan):
        self.backend = backend
        self.blocking = backend.blocking
        self.active = active
        self.plan = plan
        self.reused: list[str] = []

    @property
    def total(self) -> int:
        return getattr(self.backend, "total", 0)

    @total.setter
    def total(self, value: int) -> None:
        if hasattr(self.backend, "total"):
            self.backend.total = value

    def submit(self, stage: str, runs: list, after: list[str]) -> list[Outcome]:
        fresh = [run for run in runs if run.key not in self.active]
        handed = {o.key: o for o in self.backend.submit(stage, fresh, after)} if fresh else {}
        outcomes = []
        for run in runs:
            if run.key in handed:
                outcomes.append(handed[run.key])
                continue
            self.reused.append(run.key)
            job_id = self.active[run.key]
            if self.blocking:
                self._wait(job_id)
            ok = run.result_path.is_file() or not self.blocking
            outcomes.append(Outcome(run.key, ok, "" if ok else f"job {job_id} (started earlier) ended without a result",
                                    job_id=job_id))
        return outcomes

    def _wait(self, job_id: str) -> None:
        from simclr_hpc.launch import Registry, registry_path

        registry = Registry(registry_path(self.plan.study.root, self.plan.study.name))
        for record in registry.find(job_id)[-1:]:
            record.wait(poll_s=1.0)
