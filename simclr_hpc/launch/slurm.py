"""The Slurm commands ``launch/`` runs (sinfo, scontrol, squeue, sacct, scancel), each as an argument list, never a shell.

Job queries are restricted to this user's jobs (``squeue -u UID``, ``sacct -j IDS``): a large cluster's queue holds
hundreds of thousands of jobs, and listing them at every refresh is a load the admins notice. Everything here
tolerates a machine without Slurm: ``available()`` says whether the commands exist and the controller answers; the
query functions return empty results when they cannot ask.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from typing import NamedTuple

# States after which a job never runs again (REQUEUED, PREEMPTED, PENDING, RUNNING, ... can still change).
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)
JOB_ID = re.compile(r"^\d+(_\d+)?$")


def _run(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess | None:
    if not shutil.which(args[0]):
        return None
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def installed() -> bool:
    """sbatch, squeue and scontrol are on PATH."""
    return all(shutil.which(c) for c in ("sbatch", "squeue", "scontrol", "srun"))


def available() -> bool:
    """Slurm's commands are installed and the controller answers ``scontrol ping``."""
    if not installed():
        return False
    proc = _run(["scontrol", "ping"], timeout=15)
    return proc is not None and proc.returncode == 0 and "UP" in proc.stdout


@dataclasses.dataclass(frozen=True)
class Partition:
    name: str
    total_nodes: int
    default: bool
    state: str
    max_gpus_per_node: int


def _gpus_of_gres(gres: str) -> int:
    """``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:a100:4,shard:8`` -> GPUs per node."""
    best = 0
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            best = max(best, int(parts[-1]))
    return best


def partitions() -> dict[str, Partition]:
    """Every partition the controller knows, with node count and the most GPUs any of its nodes has."""
    proc = _run(["scontrol", "show", "partition", "-o"])
    if proc is None or proc.returncode != 0:
        return {}
    gpus: dict[str, int] = {}
    info = _run(["sinfo", "-h", "-a", "-o", "%R|%G"])
    if info is not None and info.returncode == 0:
        for line in info.stdout.splitlines():
            if "|" in line:
                name, gres = line.split("|", 1)
                gpus[name] = max(gpus.get(name, 0), _gpus_of_gres(gres))
    out = {}
    for line in proc.stdout.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        name = fields.get("PartitionName")
        if not name:
            continue
        out[name] = Partition(
            name=name,
            total_nodes=int(fields.get("TotalNodes", "0") or 0),
            default=fields.get("Default") == "YES",
            state=fields.get("State", "UNKNOWN"),
            max_gpus_per_node=gpus.get(name, 0),
        )
    return out


def max_array_size() -> int | None:
    """The cluster's MaxArraySize (largest array index + 1), or None when unknown."""
    proc = _run(["scontrol", "show", "config"])
    if proc is None or proc.returncode != 0:
        return None
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.M)
    return int(match.group(1)) if match else None


class Seen(NamedTuple):
    """What Slurm says of one job: its state and, while it waits or after it was cancelled, why (squeue's %r)."""

    state: str
    reason: str = ""


def user_id() -> str:
    """Whose jobs every query asks for: this user's (squeue accepts a numeric uid, with or without a passwd entry)."""
    return str(os.getuid())


def queue() -> dict[str, Seen]:
    """Every job of this user that slurmctld still holds (queued, running, and finished ones for MinJobAge seconds):
    ``{job id: Seen}``, one line per array task (``123_4``), tasks that never started included.

    One ``squeue -t all -u UID`` call: restricted to this user (a cluster's queue can hold millions of jobs), and with
    ``-t all`` it also answers what ``scontrol show job`` did (recently finished jobs), without accounting.
    """
    proc = _run(["squeue", "-h", "-r", "-t", "all", "-u", user_id(), "-o", "%i|%T|%r"])
    if proc is None or proc.returncode != 0:
        return {}
    seen = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            reason = "" if parts[2] in ("None", "(null)") else parts[2]
            seen[parts[0]] = Seen(parts[1], reason)
    return seen


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """Accounting's view (``{job id: state}``); empty when accounting is off or sacct is missing."""
    if not job_ids:
        return {}
    proc = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)])
    if proc is None or proc.returncode != 0:
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            # "CANCELLED by 0" -> CANCELLED
            states[jid.strip()] = state.split()[0] if state.strip() else "UNKNOWN"
    return states


def accounting_states(job_ids: list[str]) -> dict[str, Seen]:
    """Accounting's view of jobs slurmctld has forgotten (one ``sacct`` call); an array task that never started and
    whose array was cancelled takes its array's state. Unknown ids are left out."""
    parents = sorted({j.split("_")[0] for j in job_ids if "_" in j})
    accounted = sacct_states(list(job_ids) + parents)
    found = {}
    for jid in job_ids:
        parent = accounted.get(jid.split("_")[0]) if "_" in jid else None
        state = accounted.get(jid) or (parent if parent in TERMINAL_STATES else None)
        if state:
            found[jid] = Seen(state)
    return found


def job_states(job_ids: list[str]) -> dict[str, Seen]:
    """The state of each of ``job_ids`` that Slurm knows: one ``squeue`` call, then one ``sacct`` call for the jobs
    slurmctld has forgotten (finished longer ago than MinJobAge). Unknown ids are left out."""
    wanted = set(job_ids)
    found = {jid: s for jid, s in queue().items() if jid in wanted}
    missing = [j for j in job_ids if j not in found]
    if missing:
        found.update(accounting_states(missing))
    return found


def job_state(job_id: str) -> str | None:
    """Current state of one job; None if Slurm does not know it."""
    seen = job_states([job_id]).get(job_id)
    return seen.state if seen else None


def job_active(job_id: str) -> bool | None:
    """True while job ``job_id`` is pending or running, False once it has ended, None when Slurm cannot tell (no Slurm
    here, or a job it does not know): what the run lock asks before taking over a lock held by that job."""
    if not installed():
        return None
    state = job_state(job_id)
    return None if state is None else state not in TERMINAL_STATES


def scancel(job_ids: list[str]) -> subprocess.CompletedProcess | None:
    """Cancel jobs (whole arrays when given the array id)."""
    return _run(["scancel", *job_ids]) if job_ids else None
