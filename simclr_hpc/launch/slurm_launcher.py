"""The Slurm launcher: sbatch through submitit, dependencies ordered by the scheduler, states from one squeue call.

One instance serves one command, and keeps what it learnt there: whether the controller answers and its array size
limit (asked once), the partitions (asked once), the queue (one ``squeue -u`` call, answered for every check and
refresh of the command) and the jobs it submitted itself (a dependency on them needs no question at all). So a study
of any number of arrays asks the controller each question at most once. Without Slurm a dry run still renders every
script.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from simclr_hpc.config import Config
from simclr_hpc.launch import slurm
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.jobspec import JobSpec
from simclr_hpc.launch.launcher import Batch, Dependency, Launcher, array_log_dir, stage_log_dir, write_submitted_config
from simclr_hpc.launch.profile import Profile
from simclr_hpc.launch.registry import JobRecord
from simclr_hpc.launch.task import StageJob

# Failed ends: an afterok on them can never be satisfied.
_FAILED_ENDS = slurm.TERMINAL_STATES - {"COMPLETED"}


class SlurmLauncher(Launcher):
    name = "slurm"
    help = "sbatch on this cluster (arrays, dependencies and requeue by Slurm)"
    blocking = False

    def __init__(self):
        self._queue: dict[str, slurm.Seen] | None = None
        self._partitions: dict[str, slurm.Partition] | None = None
        self._submitted: set[str] = set()
        self._up: bool | None = None
        self._max_array: int | None = None

    def up(self) -> bool:
        """Slurm is installed and its controller answers (one ``scontrol ping`` per command)."""
        if self._up is None:
            self._up = slurm.available()
        return self._up

    def queue(self) -> dict[str, slurm.Seen]:
        """This user's jobs as slurmctld holds them: one ``squeue`` call per command."""
        if self._queue is None:
            self._queue = slurm.queue()
        return self._queue

    def known_states(self, job_ids: list[str]) -> dict[str, slurm.Seen]:
        """Slurm's view of ``job_ids``: the command's one queue snapshot, then accounting for jobs it has forgotten."""
        found = {j: s for j, s in self.queue().items() if j in set(job_ids)}
        missing = [j for j in job_ids if j not in found]
        if missing:
            found.update(slurm.accounting_states(missing))
        return found

    def check(self, batch: Batch, dry_run: bool) -> Batch:
        if not self.up():
            if dry_run:
                return batch
            if not slurm.installed():
                raise LaunchError(
                    "sbatch not found: this machine has no Slurm. Use --dry-run to print the script, "
                    "or run on a login node"
                )
            raise LaunchError("the Slurm controller does not answer (`scontrol ping`): try again, or ask the admins")
        self._check_partition(batch.spec)
        return replace(batch, dependency=self._waiting(batch.dependency))

    def _check_partition(self, spec: JobSpec) -> None:
        if self._partitions is None:
            self._partitions = slurm.partitions()
        parts = self._partitions
        name = spec.profile.partition or next((p.name for p in parts.values() if p.default), None)
        known = ", ".join(sorted(parts)) or "none"
        if name is None:
            raise LaunchError(f"no --partition given and the cluster has no default partition: use one of {known}")
        if name not in parts:
            raise LaunchError(f"--partition {name}: no such partition (partitions: {known})")
        part = parts[name]
        if spec.nodes > part.total_nodes:
            raise LaunchError(f"--nodes {spec.nodes}: partition {name} has only {part.total_nodes} node(s)")
        gpus = spec.profile.gpus_per_node
        if gpus > part.max_gpus_per_node:
            raise LaunchError(
                f"--gpus-per-node {gpus}: nodes of partition {name} have at most {part.max_gpus_per_node} GPU(s)"
            )

    def _waiting(self, dependency: Dependency) -> Dependency:
        """The dependency ids Slurm still has to wait for; one that does not exist, or (afterok) that failed, is
        refused, since the job could never start."""
        asked = [j for j in dependency.ids if j not in self._submitted]
        states = self.known_states(asked) if asked else {}
        waiting = []
        for jid in dependency.ids:
            if jid in self._submitted:
                waiting.append(jid)
                continue
            seen = states.get(jid)
            if seen is None:
                raise LaunchError(f"--dependency {dependency.kind}:{jid}: no such job (squeue/sacct do not know it)")
            if dependency.kind == "afterok" and seen.state in _FAILED_ENDS:
                raise LaunchError(
                    f"--dependency afterok:{jid}: that job ended {seen.state}, so this one could never start"
                )
            # A job slurmctld has already forgotten (only accounting knows it) and that ended needs no waiting.
            if seen.state in slurm.TERMINAL_STATES and jid not in self.queue():
                continue
            waiting.append(jid)
        return dependency.keeping(waiting)

    def requeue_budget(self, profile: Profile) -> int:
        return profile.max_requeues

    def max_array_size(self, spec: JobSpec) -> int:
        if self._max_array is None:
            self._max_array = (slurm.max_array_size() if self.up() else None) or 0  # 0: the site did not say
        site = self._max_array
        return min(spec.profile.max_array_size, site - 1) if site else spec.profile.max_array_size

    def submitit_executor(self, spec: JobSpec, folder: Path):
        import submitit

        folder.mkdir(parents=True, exist_ok=True)
        executor = submitit.AutoExecutor(
            folder=folder, cluster="slurm", slurm_python=spec.python, slurm_max_num_timeout=spec.profile.max_requeues
        )
        executor.update_parameters(**{f"slurm_{k}": v for k, v in spec.slurm_params.items()})
        return executor

    def _job(self, batch: Batch) -> StageJob:
        return StageJob(batch.target, max_requeues=self.requeue_budget(batch.spec.profile))

    def submit_one(self, batch: Batch) -> JobRecord:
        cfg = batch.cfgs[0]
        spec = batch.spec.with_dependency(batch.dependency.sbatch())
        folder = stage_log_dir(batch.stage, cfg)
        write_submitted_config(batch.stage, cfg)
        job = self.submitit_executor(spec, folder).submit(self._job(batch), batch.stage, _payload(cfg))
        self._submitted.add(str(job.job_id))
        return self.record(batch, cfg, job.job_id, folder, dependency=spec.slurm_params.get("dependency"))

    def submit_array(self, batch: Batch, stamp: str) -> list[JobRecord]:
        for cfg in batch.cfgs:
            write_submitted_config(batch.stage, cfg)
        records: list[JobRecord] = []
        array_ids: list[str] = []
        for chunk in self.chunks(batch, array_ids.__getitem__):
            cfgs = [batch.cfgs[i] for i in chunk.runs]
            folder = array_log_dir(batch.stage, cfgs[0], stamp, chunk.index)
            jobs = self.submitit_executor(chunk.spec, folder).map_array(
                self._job(batch), [batch.stage] * len(cfgs), [_payload(c) for c in cfgs]
            )
            array_ids.append(jobs[0].job_id.split("_")[0])
            self._submitted.update([array_ids[-1], *(str(j.job_id) for j in jobs)])
            dependency = chunk.spec.slurm_params.get("dependency")
            records += [
                self.record(
                    batch, cfg, job.job_id, folder, array_job_id=array_ids[-1], array_index=a, dependency=dependency
                )
                for a, (cfg, job) in enumerate(zip(cfgs, jobs))
            ]
        return records

    def states(self, records: list[JobRecord]) -> dict[int, slurm.Seen]:
        """Slurm's state of each record (one squeue, one sacct for forgotten jobs); a job neither knows (Slurm
        forgot it and accounting is off) is COMPLETED when its run wrote result.json, else ENDED."""
        known = self.known_states([r.job_id for r in records])
        out = {}
        for rec in records:
            seen = known.get(rec.job_id)
            if seen is None:
                seen = slurm.Seen("COMPLETED" if rec.result_path.exists() else "ENDED")
            out[rec.id] = seen
        return out

    def cancel(self, record: JobRecord) -> bool:
        proc = slurm.scancel([record.job_id])
        return proc is not None and proc.returncode == 0


def _payload(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")
