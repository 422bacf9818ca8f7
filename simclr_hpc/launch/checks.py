"""Every check of a submission that can fail on user input, run before anything is written or submitted.

``submit.py`` calls these first, so a bad request (unknown partition, too many nodes or GPUs, a dependency that does not
exist or already failed, two runs writing one directory, an unsafe path) leaves no trace.
"""

from __future__ import annotations

from pathlib import Path

from simclr_hpc.config import Config
from simclr_hpc.launch import slurm
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.executor import Plan
from simclr_hpc.launch.profile import check_plain_text

# Failed ends: an afterok on them can never be satisfied.
_FAILED_ENDS = slurm.TERMINAL_STATES - {"COMPLETED"}


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
                if not slurm.JOB_ID.match(jid):
                    raise LaunchError(f"--dependency {part!r}: {jid!r} is not a Slurm job id (digits, or ID_INDEX)")
                ids.append(jid)
    return list(dict.fromkeys(ids))


def resolved(cfg: Config) -> Config:
    """The config with ``run.root`` absolute: jobs start in other directories and inside containers."""
    root = Path(cfg.run.root).expanduser().absolute()
    try:
        check_plain_text(str(root), "run.root")
    except ValueError as err:
        raise LaunchError(str(err)) from None
    data = cfg.model_dump(mode="json")
    data["run"]["root"] = str(root)
    return Config.model_validate(data)


def check_slurm(plan: Plan, dependency: list[str], dry_run: bool) -> list[str]:
    """Ask Slurm whether the request can run; returns the dependency ids Slurm still has to wait for."""
    if not slurm.installed():
        if dry_run:
            return dependency
        raise LaunchError("sbatch not found: this machine has no Slurm. Use --dry-run to print the script, "
                          "or run on a login node")
    if not slurm.available():
        if dry_run:
            return dependency
        raise LaunchError("the Slurm controller does not answer (`scontrol ping`): try again, or ask the admins")
    parts = slurm.partitions()
    name = plan.profile.partition or next((p.name for p in parts.values() if p.default), None)
    known = ", ".join(sorted(parts)) or "none"
    if name is None:
        raise LaunchError(f"no --partition given and the cluster has no default partition: use one of {known}")
    if name not in parts:
        raise LaunchError(f"--partition {name}: no such partition (partitions: {known})")
    part = parts[name]
    if plan.nodes > part.total_nodes:
        raise LaunchError(f"--nodes {plan.nodes}: partition {name} has only {part.total_nodes} node(s)")
    gpus = plan.profile.gpus_per_node
    if gpus > part.max_gpus_per_node:
        raise LaunchError(f"--gpus-per-node {gpus}: nodes of partition {name} have at most "
                          f"{part.max_gpus_per_node} GPU(s)")
    waiting = []
    for jid in dependency:
        state = slurm.job_state(jid)
        if state is None:
            raise LaunchError(f"--dependency afterok:{jid}: no such job (squeue/sacct do not know it)")
        if state in _FAILED_ENDS:
            raise LaunchError(f"--dependency afterok:{jid}: that job ended {state}, so this one could never start")
        # A job slurmctld has already forgotten (only accounting knows it) and that COMPLETED needs no waiting.
        if state == "COMPLETED" and jid not in slurm.scontrol_states():
            continue
        waiting.append(jid)
    return waiting


def check_unique(stage: str, cfgs: list[Config]) -> None:
    """Two runs of one sweep must not write the same run directory."""
    seen: dict[Path, int] = {}
    for i, cfg in enumerate(cfgs):
        path = cfg.run_dir(stage)
        if path in seen:
            raise LaunchError(f"sweep entries {seen[path]} and {i} both write {path}: give them different run.name")
        seen[path] = i
