"""Runs of a study whose job is still pending or running are not handed out again.

``study submit`` (or ``study run``) a second time while the first one's jobs are queued or running would otherwise
submit every unfinished run again: two jobs training in one run directory. The study's job registry, refreshed by
the command's launcher (one squeue call on Slurm, the process table here), says which runs have a live job; the walk
gives those runs their existing job instead of a new one: on Slurm, later runs then wait for it (afterany on its id);
a blocking launcher waits for it to end and reads its result. ``--force`` submits them anyway (the run lock still
keeps the two from writing the same directory at once).
"""

from __future__ import annotations

from simclr_hpc import launch
from simclr_hpc.study.runs import Plan

# States of a job that has not ended yet (SUBMITTED: our own state before the launcher first saw the job).
ACTIVE_STATES = frozenset({"SUBMITTED", "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED",
                           "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING",
                           "STAGE_OUT", "PREEMPTED"})


def active_jobs(plan: Plan, launcher: launch.Launcher) -> dict[str, launch.JobRecord]:
    """Run key -> the record of every run of ``plan`` whose latest job is still pending or running."""
    path = launch.registry_path(plan.study.root, plan.study.name)
    if not path.exists():
        return {}
    latest = {f"{rec.stage}/{rec.run_name}": rec
              for rec in launch.refresh(launch.Registry(path), {launcher.name: launcher})}
    return {key: rec for key, rec in latest.items() if rec.state in ACTIVE_STATES}
