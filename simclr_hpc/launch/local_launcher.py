"""The launchers that run jobs on this machine: submitit's local executor (worker processes) and this process.

Neither has a scheduler to order jobs, so both are ``blocking``: a study waits for each array before the next. A
dependency given by hand (``--dependency``) is a job of this machine recorded in the study's registry; each run waits
for the ``(process id, result.json)`` of those jobs before it starts (the local form of ``afterok``).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import traceback
from pathlib import Path

from simclr_hpc import fsutil, rundir
from simclr_hpc.launch.environment import local_gpu_setup
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.jobspec import JobSpec
from simclr_hpc.launch.launcher import Batch, Launcher, stage_log_dir, write_submitted_config
from simclr_hpc.launch.registry import JobRecord, Registry, registry_path
from simclr_hpc.launch.slurm import Seen
from simclr_hpc.launch.task import LaneJob, StageJob, resolve_target, wait_for_results


def _lanes(n_runs: int, cap: int) -> list[list[int]]:
    """Runs dealt to ``cap`` lanes back and forth (0, 1, 1, 0, 0, 1, ... for two lanes), not round-robin: sweeps come
    as repeating patterns (encoder x seed), and round-robin would give every heavy run of a pattern to one lane."""
    lane_of = [i % cap if (i // cap) % 2 == 0 else cap - 1 - i % cap for i in range(n_runs)]
    return [[i for i in range(n_runs) if lane_of[i] == k] for k in range(cap)]


class LocalLauncher(Launcher):
    name = "local"
    help = "submitit's local executor: the same jobs as on a cluster, as worker processes of this machine"
    blocking = True

    def check(self, batch: Batch, dry_run: bool) -> Batch:
        batch = super().check(batch, dry_run)
        self.waits(batch)  # every dependency must be a job of this machine
        return batch

    def waits(self, batch: Batch) -> list[tuple[int, str]]:
        """The ``(pid, result.json)`` of every job the batch depends on, from its study's registry."""
        cfg = batch.cfgs[0]
        registry = Registry(registry_path(cfg.run.root, cfg.run.study))
        waits = []
        for jid in batch.dependency.ids:
            rows = [r for r in registry.find(jid) if r.executor in ON_THIS_MACHINE]
            if not rows:
                raise LaunchError(
                    f"--dependency {batch.dependency.kind}:{jid}: no job {jid} of this machine in {registry.path}"
                )
            waits += [(int(r.job_id), str(r.result_path)) for r in rows]
        return waits

    def submitit_executor(self, spec: JobSpec, folder: Path, threads: int | None = None):
        import submitit

        folder.mkdir(parents=True, exist_ok=True)
        setup = local_gpu_setup() + list(spec.setup)  # this machine's GPUs, not submitit's "" (none asked for)
        if threads:
            # Workers share this machine's cores: each gets its share of threads (unless the user chose already),
            # since oversubscribed BLAS/oneDNN threads make small models many times slower.
            setup.append(f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{threads}}}")
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(
            timeout_min=spec.profile.time_min, tasks_per_node=spec.tasks_per_node, local_setup=setup
        )
        return executor

    def submit_one(self, batch: Batch) -> JobRecord:
        cfg = batch.cfgs[0]
        folder = stage_log_dir(batch.stage, cfg)
        write_submitted_config(batch.stage, cfg)
        job = self.submitit_executor(batch.spec, folder).submit(
            StageJob(batch.target, self.waits(batch)), batch.stage, cfg.model_dump(mode="json")
        )
        return self.record(batch, cfg, job.job_id, folder, dependency=batch.dependency.sbatch())

    def submit_array(self, batch: Batch, stamp: str) -> list[JobRecord]:
        """``cap`` worker processes (lanes), each running its share of the runs one after another. A process per run
        would pay Python's and torch's start-up (about 5 CPU-seconds) for every run, more than a small linear probe
        costs; a lane pays it once. A failed run does not stop the runs after it in its lane."""
        cap = max(1, min(batch.spec.profile.array_parallelism, len(batch.cfgs)))
        threads = max(1, (os.cpu_count() or 1) // cap)
        waits = self.waits(batch)
        records: dict[int, JobRecord] = {}
        for k, lane in enumerate(_lanes(len(batch.cfgs), cap)):
            calls = []
            for i in lane:
                write_submitted_config(batch.stage, batch.cfgs[i])
                calls.append((batch.stage, batch.cfgs[i].model_dump(mode="json"), waits))
            first = batch.cfgs[lane[0]]
            folder = rundir.lane_log_dir(first.run.root, first.run.study, batch.stage, stamp, k)
            job = self.submitit_executor(batch.spec, folder, threads).submit(LaneJob(batch.target), calls)
            for i in lane:
                records[i] = self.record(batch, batch.cfgs[i], job.job_id, folder, dependency=batch.dependency.sbatch())
        return [records[i] for i in range(len(batch.cfgs))]

    def states(self, records: list[JobRecord]) -> dict[int, Seen]:
        """A run is done when it wrote result.json (a worker runs several); else running while its worker lives."""
        return {
            rec.id: Seen("COMPLETED" if rec.result_path.exists() else "RUNNING" if _own_process(rec) else "FAILED")
            for rec in records
        }

    def cancel(self, record: JobRecord) -> bool:
        # Signalled only while the pid is still the job's own process (submitit's, started at its submission): a pid
        # reused since by another process is left alone.
        if _own_process(record):
            try:
                os.kill(int(record.job_id), signal.SIGTERM)
            except ProcessLookupError:
                pass
        return True


def _own_process(rec: JobRecord) -> bool:
    """The local job's pid is still its submitit process, started when it was submitted (not a later process that
    reused the pid: it would look RUNNING forever, and a cancel would signal it)."""
    started = dt.datetime.fromisoformat(rec.submitted_at).timestamp()
    return fsutil.pid_alive(rec.job_id) and fsutil.is_process(rec.job_id, started, "submitit")


class InProcessLauncher(LocalLauncher):
    name = "inprocess"
    help = "every run in this process, one after another (no job machinery)"
    blocking = True

    def initial_state(self, run_dir: Path) -> str:
        return "COMPLETED" if rundir.is_finished(run_dir) else "FAILED"

    def submit_one(self, batch: Batch) -> JobRecord:
        return self.submit_array(batch, "")[0]

    def submit_array(self, batch: Batch, stamp: str) -> list[JobRecord]:
        """Call the target for each run in turn; a failed run is recorded (with its error) and the next one runs."""
        fn = resolve_target(batch.target)
        waits = self.waits(batch)
        records = []
        for cfg in batch.cfgs:
            reason = ""
            try:
                wait_for_results(waits)
                fn(batch.stage, cfg)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed run must not stop the others
                traceback.print_exc(file=sys.stderr)
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            record = self.record(batch, cfg, str(os.getpid()), None, dependency=batch.dependency.sbatch())
            record.reason = "" if record.state == "COMPLETED" else reason or "finished without writing result.json"
            records.append(record)
        return records

    def states(self, records: list[JobRecord]) -> dict[int, Seen]:
        return {rec.id: Seen(rec.state, rec.reason) for rec in records}  # ended before the records were made

    def cancel(self, record: JobRecord) -> bool:
        return True


ON_THIS_MACHINE = (LocalLauncher.name, InProcessLauncher.name)
"""Launchers whose job ids are process ids of this machine (a local dependency can wait for them)."""
