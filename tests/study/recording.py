"""A launcher for the walker's tests: it submits nothing, records each array it is handed (stage, run keys, what it
waits for) and hands out increasing job ids as sbatch would. Registered under a name of its own (``EXECUTORS``), as a
new executor would be: the study picks it by name and cannot tell it from Slurm's (``blocking = False``)."""

from __future__ import annotations

from simclr_hpc.launch.launcher import Launcher
from simclr_hpc.launch.slurm import Seen

NAME = "recording"


class RecordingLauncher(Launcher):
    name = NAME
    help = "records the arrays it is handed (tests)"
    blocking = False
    handed: list[tuple[str, list[str], list[str], str]] = []
    """(stage, run keys, dependency ids, array job id) of every array, across instances (one per command)."""

    def check(self, batch, dry_run):
        return batch

    def submit_one(self, batch):
        return self.submit_array(batch, "")[0]

    def submit_array(self, batch, stamp):
        job = str(1000 + len(self.handed))
        keys = [f"{batch.stage}/{cfg.run.name}" for cfg in batch.cfgs]
        self.handed.append((batch.stage, keys, list(batch.dependency.ids), job))
        return [
            self.record(batch, cfg, f"{job}_{i}", None, array_job_id=job, array_index=i)
            for i, cfg in enumerate(batch.cfgs)
        ]

    def states(self, records):
        return {rec.id: Seen(rec.state) for rec in records}  # nothing runs: SUBMITTED (queued) forever
