"""The only module that calls ``torch.distributed``.

Everything else receives collectives as plain callables (``gather=all_gather_with_grad``) or asks for the rank and world
size through :class:`DistEnv`, so losses and models stay pure and testable in one process.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from simclr_hpc.readers import UserError, quote

LAUNCHER_VARS = ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "SUBMITIT_EXECUTOR", "OMPI_COMM_WORLD_SIZE")
"""Set by something that starts ranks (Slurm, torchrun, submitit, mpirun): without any, WORLD_SIZE came from a shell."""


class DistEnvError(UserError):
    """The rank variables of the environment are unusable, or the ranks did not meet before the deadline."""


def _whole(env, name: str, default: int, low: int, high: int = 1 << 20) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not str(raw).strip().isdigit() or not low <= int(raw) <= high:
        raise DistEnvError(
            f"environment: {name}={quote(raw)} is not a whole number in {low}..{high}; unset it, or "
            f"set it as torchrun does (WORLD_SIZE ranks, RANK 0..WORLD_SIZE-1, MASTER_PORT 1..65535)"
        )
    return int(raw)


def _from_shell(env) -> bool:
    return not any(env.get(name) for name in LAUNCHER_VARS)


SHELL_HINT = (
    "no Slurm job or torchrun here, so they came from your shell: `unset WORLD_SIZE RANK LOCAL_RANK "
    "MASTER_ADDR MASTER_PORT` to train in one process"
)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job, read from the environment that the launcher exported."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "DistEnv":
        """Read RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun's names)."""
        env = os.environ if environ is None else environ
        world = _whole(env, "WORLD_SIZE", 1, 1)
        found = cls(
            rank=_whole(env, "RANK", 0, 0),
            world_size=world,
            local_rank=_whole(env, "LOCAL_RANK", 0, 0),
            local_world_size=_whole(env, "LOCAL_WORLD_SIZE", 1, 1),
            master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
            master_port=_whole(env, "MASTER_PORT", 29500, 1, 65535),
        )
        if found.rank >= world or found.local_rank >= max(found.local_world_size, 1) or found.local_world_size > world:
            hint = (
                SHELL_HINT
                if _from_shell(env)
                else "each rank needs RANK < WORLD_SIZE and LOCAL_RANK < LOCAL_WORLD_SIZE"
            )
            raise DistEnvError(
                f"environment: RANK={found.rank} LOCAL_RANK={found.local_rank} LOCAL_WORLD_SIZE="
                f"{found.local_world_size} do not fit WORLD_SIZE={world}; {hint}"
            )
        return found


def join_process_group(env: DistEnv, backend: str, timeout_s: float) -> None:
    """Meet the other ranks at MASTER_ADDR:MASTER_PORT and start the process group, or stop after ``timeout_s`` with
    one line naming what was awaited (which ranks, where, and whether the variables came from a shell).

    torch's own ``env://`` rendezvous waits as long as the collective timeout and then raises a store error, so a
    stale ``WORLD_SIZE=2`` in a shell looked like a silent ten-minute hang. The engines (Accelerate, DeepSpeed) find
    the group started and use it. Nothing to do for one process.
    """
    if env.world_size <= 1 or is_initialized():
        return
    where = f"{env.master_addr}:{env.master_port}"
    shell = _from_shell(os.environ)
    if shell:
        print(
            f"simclr-hpc: waiting up to {timeout_s:g} s for WORLD_SIZE={env.world_size} ranks at {where} (rank "
            f"{env.rank}); {SHELL_HINT}",
            file=sys.stderr,
            flush=True,
        )
    deadline = datetime.timedelta(seconds=timeout_s)
    try:
        store = dist.TCPStore(
            env.master_addr,
            env.master_port,
            env.world_size,
            is_master=env.rank == 0,
            timeout=deadline,
            wait_for_workers=True,
        )
    except (RuntimeError, ValueError, OSError) as err:
        awaited = (
            f"the other {env.world_size - 1} rank(s) to join rank 0"
            if env.rank == 0
            else f"rank 0 (rank {env.rank} of {env.world_size})"
        )
        hint = SHELL_HINT if shell else "check that every rank of the job started (its log names the missing one)"
        said = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DistEnvError(
            f"rendezvous timed out or failed after at most {timeout_s:g} s waiting for {awaited} at "
            f"{where} (WORLD_SIZE={env.world_size}): {quote(said, 120)}; {hint}"
        ) from err
    dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size, timeout=deadline)


def visible_gpus(environ: dict | None = None) -> int:
    """GPUs this process may use: torch's count where CUDA is up, else the entries of CUDA_VISIBLE_DEVICES (so the
    choice below can be checked on a machine without a GPU), else 0."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    env = os.environ if environ is None else environ
    listed = env.get("CUDA_VISIBLE_DEVICES")
    return len([d for d in listed.split(",") if d.strip()]) if listed else 0


def gpu_index(local_rank: int, visible: int) -> int:
    """The CUDA ordinal of the task with ``local_rank`` that sees ``visible`` GPUs: ``local_rank mod visible``.

    A node whose tasks all see every GPU (``--gpus-per-node``) gives task k GPU k. A site that binds one GPU per task
    (``--gpus-per-task=1``, ``--gpu-bind``, ``SLURM_GPU_BIND``) narrows each task's CUDA_VISIBLE_DEVICES to its own
    GPU, which that task sees as ordinal 0, whatever its LOCAL_RANK: ``cuda:LOCAL_RANK`` would be an invalid ordinal
    on every task but the first."""
    if visible < 1:
        raise ValueError(f"no GPU visible to local rank {local_rank}")
    return local_rank % visible


def local_device(env: DistEnv, environ: dict | None = None) -> torch.device:
    """This task's device: ``cuda:gpu_index(...)`` where CUDA is available (and made the current device), else the
    CPU. ``environ`` stands in for ``os.environ`` (tests simulate a site's GPU binding with it)."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", gpu_index(env.local_rank, visible_gpus(environ)))
    torch.cuda.set_device(device)
    return device


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


_host_group = None
"""A gloo group over every rank for host-side counters, when the default group is NCCL (see :func:`host_sum`)."""


def open_host_group(timeout_s: float) -> None:
    """Create the group :func:`host_sum` uses (every rank calls this at the same point, after joining the job)."""
    global _host_group
    if is_initialized() and dist.get_backend() != "gloo" and _host_group is None:
        _host_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))


def host_sum(values: list[int]) -> list[int]:
    """Sum integers over the ranks on the host (identity in one process).

    Under NCCL a collective on the default group is queued on the GPU behind the step's work, and reading its result
    waits for all of that work: a host sync. These go through a gloo group instead and never touch the device, so
    a per-step vote (the preemption flag) costs a few microseconds of network and no stall."""
    if not is_initialized() or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device="cpu")  # gloo: on the host by design
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=_host_group)
    return tensor.tolist()


def destroy_process_group() -> None:
    global _host_group
    _host_group = None
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity in one process) and return it."""
    if not is_initialized():
        return tensor
    if dist.get_backend() == "nccl" and not tensor.is_cuda:
        # NCCL reduces device memory only; counters kept on the host make the round trip.
        on_device = tensor.cuda()
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        tensor.copy_(on_device.cpu())
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward returns this rank's slice of the SUM of every rank's gradient.

    Each rank's loss uses every rank's embeddings, so the gradient of the job's total loss with respect to this rank's
    embeddings is the sum over ranks of d(loss_r)/d(z_local). Returning only the local gradient (what plain all_gather
    plus ``requires_grad`` gives) silently drops the negatives' contribution: the most common distributed SimCLR bug.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank = dist.get_rank()
        ctx.n = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ([n, ...], same n on every rank) from all ranks, keeping gradients. Identity alone."""
    if not is_initialized() or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def hostname() -> str:
    return socket.gethostname()
