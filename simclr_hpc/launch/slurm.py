"""The Slurm commands ``launch/`` runs (sinfo, scontrol, squeue, sacct, scancel), each as an argument list, never a shell.

Everything here tolerates a machine without Slurm: ``available()`` says whether the commands exist and the controller
answers; the query functions return empty results when they cannot ask.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

# States after which a job never runs again (REQUEUED, PREEMPTED, PENDING, RUNNING, ... can still change).
TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "REVOKED",
})
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


def squeue_states(job_ids: list[str] | None = None) -> dict[str, str]:
    """Queued and running jobs: ``{job id: state}``, array tasks one per line (``123_4``)."""
    # Not `squeue -j`: it rejects the whole call when one id has left the queue. Ask for all, filter here.
    proc = _run(["squeue", "-h", "-r", "-o", "%i|%T"])
    if proc is None or proc.returncode != 0:
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        if "|" in line:
            jid, state = line.strip().split("|", 1)
            states[jid] = state
    if job_ids:
        wanted = set(job_ids)
        states = {k: v for k, v in states.items() if k in wanted}
    return states


def scontrol_states() -> dict[str, str]:
    """Every job slurmctld still holds in memory (finished ones for MinJobAge seconds): ``{job id: state}``.
    Works without accounting."""
    proc = _run(["scontrol", "-o", "show", "job"])
    if proc is None or proc.returncode != 0:
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        jid = fields.get("JobId")
        if not jid:
            continue
        state = fields.get("JobState", "UNKNOWN")
        array_id, tasks = fields.get("ArrayJobId"), fields.get("ArrayTaskId", "")
        if array_id:
            # one record per started task; tasks that never started share one record ("1-3%2", "4,6")
            for index in _expand_indices(tasks):
                states[f"{array_id}_{index}"] = state
        states[jid] = state
    return states


def _expand_indices(text: str) -> list[int]:
    text = text.split("%")[0]
    if not re.fullmatch(r"[\d,-]+", text) or text == "4294967294":
        return []
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out.extend(range(int(lo), int(hi) + 1) if hi.isdigit() else [int(lo)])
    return out


def array_parent_state(job_id: str, *sources: dict[str, str]) -> str | None:
    """For an array task that never started (``123_4``), the terminal state of its array's record (``123``):
    a pending task that was cancelled has no record of its own."""
    if "_" not in job_id:
        return None
    parent = job_id.split("_")[0]
    for states in sources:
        if states.get(parent) in TERMINAL_STATES:
            return states[parent]
    return None


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


def job_state(job_id: str) -> str | None:
    """Current state of one job from squeue, slurmctld's memory or accounting; None if Slurm does not know it."""
    memory = scontrol_states()
    found = squeue_states([job_id]).get(job_id) or memory.get(job_id)
    if found:
        return found
    accounted = sacct_states([job_id, job_id.split("_")[0]])
    return accounted.get(job_id) or array_parent_state(job_id, memory, accounted)


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
