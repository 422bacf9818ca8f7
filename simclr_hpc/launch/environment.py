"""Inside a job task: export torch.distributed's ``env://`` variables from Slurm's (or submitit's local executor's).

Why not ``submitit.helpers.TorchDistributedEnvironment``: it draws MASTER_PORT at random from 20000-60000, which
overlaps Linux's ephemeral range (32768-60999, where the kernel hands out client ports and a collision fails the
rendezvous), and it narrows CUDA_VISIBLE_DEVICES to the local rank, which breaks a loop that picks ``cuda:LOCAL_RANK``
(Accelerate does). We keep its source of truth, ``submitit.JobEnvironment`` (Slurm's SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID and the parsed SLURM_JOB_NODELIST), and derive the port from the job id instead.
No torch import here.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess

# 20000-29999: above the well-known and registered ports most daemons use, below Linux's ephemeral range (32768+).
PORT_BASE = 20000
PORT_SPAN = 10000


def master_port(job_id: str | int) -> int:
    """The rendezvous port of a job: ``20000 + job_id % 10000``.

    Every task of a job computes the same port without talking to the others, a requeued job (same id) gets the same
    port back, and two jobs whose first nodes coincide collide only if their ids differ by a multiple of 10000.
    For an array task, pass its own SLURM_JOB_ID (unique per task), not the array's id.
    """
    digits = "".join(ch for ch in str(job_id).split("_")[0] if ch.isdigit())
    return PORT_BASE + (int(digits) % PORT_SPAN if digits else 0)


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list (``node[1-2],gpu07`` -> ``node1``): submitit's parser, ``scontrol`` as fallback."""
    from submitit.slurm.slurm import SlurmParseException, _parse_node_list

    try:
        return _parse_node_list(nodelist)[0]
    except (SlurmParseException, IndexError):
        if shutil.which("scontrol"):
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
            )
            return out.stdout.split()[0]
        raise


@dataclasses.dataclass(frozen=True)
class DistVars:
    """The variables ``export_torch_env`` sets (all strings in the environment)."""

    master_addr: str
    master_port: int
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    job_id: str

    def as_env(self) -> dict[str, str]:
        return {
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "NODE_RANK": str(self.node_rank),
        }


def dist_vars() -> DistVars:
    """Compute the torch distributed variables of this task from the job environment (no side effects).

    Under Slurm: MASTER_ADDR is the first host of SLURM_JOB_NODELIST, RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS,
    LOCAL_RANK = SLURM_LOCALID, LOCAL_WORLD_SIZE = tasks on this node (SLURM_TASKS_PER_NODE's entry, else
    ntasks / nnodes). Under submitit's local executor the same from its SUBMITIT_LOCAL_* variables.
    """
    import submitit

    env = submitit.JobEnvironment()
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    master = first_host(nodelist) if nodelist else env.hostnames[0]
    # SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE look like "2(x3),1": expand and take this node's count.
    local_world = env.num_tasks // max(1, env.num_nodes)
    tpn = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE")
    if tpn:
        counts: list[int] = []
        for part in tpn.split(","):
            num, _, rep = part.partition("(x")
            counts.extend([int(num)] * (int(rep.rstrip(")")) if rep else 1))
        if 0 <= env.node < len(counts):
            local_world = counts[env.node]
    return DistVars(
        master_addr=master,
        master_port=master_port(env.job_id),
        rank=env.global_rank,
        world_size=env.num_tasks,
        local_rank=env.local_rank,
        local_world_size=local_world,
        node_rank=env.node,
        job_id=str(env.job_id),
    )


def export_torch_env() -> DistVars:
    """Set MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK in ``os.environ``.

    Overwrites what is there: a requeued or nested job must not inherit a stale rendezvous. CUDA_VISIBLE_DEVICES is
    left as Slurm set it: every GPU of the node (the engine takes ``cuda:LOCAL_RANK``), or, where the site binds one
    GPU per task, that task's GPU only (the engine takes ``cuda:0``; ``distributed.gpu_index``).
    """
    found = dist_vars()
    os.environ.update(found.as_env())
    return found


def local_gpu_setup(environ: dict | None = None) -> list[str]:
    """Shell lines that give a job of submitit's local executor the GPUs this process may use.

    That executor sets the job's CUDA_VISIBLE_DEVICES to its ``gpus_per_node`` first ordinals, ``""`` when none are
    asked for (``study run`` and ``demo`` ask for none): a job on a GPU machine trained on the CPU without a word. The
    job gets this process's CUDA_VISIBLE_DEVICES instead, or every GPU when it is unset (ids, UUIDs or MIG names)."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return ["unset CUDA_VISIBLE_DEVICES"]
    return [f"export CUDA_VISIBLE_DEVICES={shlex.quote(visible)}"]
