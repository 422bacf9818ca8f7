"""The distributed engine: one small interface the loop and the tasks step a model through, whatever runs underneath.

- ``dist.engine=ddp``: :class:`~simclr_hpc.train.engine_ddp.DDPEngine` (Accelerate).
- ``dist.engine=deepspeed``: :class:`~simclr_hpc.train.engine_deepspeed.DeepSpeedEngine` (ZeRO 0-2, bf16, offload).

Every method means the same on both: ``backward`` accumulates one micro-batch's gradients and nothing else;
``optimizer_step`` applies the step's gradients and clears them. Only the two engine modules import Accelerate or
DeepSpeed; ``train/engines.create_engine`` imports the one a config asks for.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.config import Config, ConfigError
from simclr_hpc.train import precision as P

log = logging.getLogger("simclr_hpc")


def _warn_if_gpus_hidden() -> None:
    """Say so when this machine has NVIDIA GPUs that this process cannot use (training would go on, on the CPU)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        log.warning(
            "this machine has NVIDIA GPUs but CUDA is unavailable to this process (CUDA_VISIBLE_DEVICES=%r): "
            "training on the CPU",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )


class WorldSizeMismatch(RuntimeError):
    """Ranks disagree on the job's shape: some processes would train alone."""


def derive_batch(global_batch: int, world_size: int, max_batch_per_device: int) -> tuple[int, int, int]:
    """(per_device, micro, accumulation) from the one batch number a user sets.

    ``per_device`` images per rank per optimizer step; ``micro`` images per forward pass; ``accumulation`` passes per
    step. Raises ConfigError when the global batch does not split evenly over the ranks.
    """
    if global_batch % world_size:
        raise ConfigError(
            f"train.global_batch: {global_batch} is not divisible by the world size {world_size} "
            f"(nodes x GPUs per node); use a multiple of {world_size}"
        )
    per_device = global_batch // world_size
    micro = per_device
    if max_batch_per_device and per_device > max_batch_per_device:
        micro = max_batch_per_device
        while per_device % micro:
            micro -= 1
    return per_device, micro, per_device // micro


class Engine(ABC):
    """One process's view of the job: device, rank, world size, and how to step a model.

    A subclass joins the process group in its constructor (setting ``device``) and then calls :meth:`_joined`.
    """

    device: torch.device

    def __init__(self, cfg: Config, env: D.DistEnv | None = None):
        self.cfg = cfg
        self.env = env or D.DistEnv.from_env()
        # cuda:(LOCAL_RANK mod visible GPUs), made current: right whether a task sees every GPU of its node or only
        # the one a site bound to it (distributed.gpu_index).
        self.device = D.local_device(self.env)
        self.cuda = self.device.type == "cuda"
        if not self.cuda:
            _warn_if_gpus_hidden()
        # train.precision resolved for this device (precision.py): bf16 where the GPU has it natively, fp16 on older
        # GPUs, fp32 on a CPU unless asked for explicitly.
        self.precision = P.device_precision(cfg.train.precision, self.device)
        self.bf16, self.fp16 = self.precision == "bf16", self.precision == "fp16"
        self.backend = "nccl" if self.cuda else "gloo"

    def _joined(self) -> None:
        """Read rank and world size from the process group and check that every rank agrees on them."""
        self.rank = D.rank()
        self.world_size = D.world_size()
        self._check_world()
        D.open_host_group(self.cfg.train.collective_timeout_s)

    def _check_world(self) -> None:
        """Every rank must agree on the world size, and it must be the one the launcher asked for."""
        expected = self.env.world_size
        slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1"))
        if slurm_tasks > 1 and expected == 1:
            raise WorldSizeMismatch(
                f"Slurm started {slurm_tasks} tasks but WORLD_SIZE is unset: each would train alone. "
                "Launch with `simclr-hpc submit` or export RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT per task"
            )
        if self.world_size != expected:
            raise WorldSizeMismatch(
                f"rank {self.env.rank}: WORLD_SIZE={expected} but the process group has {self.world_size} ranks"
            )
        seen = D.all_gather_objects((self.rank, self.world_size, D.hostname()))
        sizes = {size for _, size, _ in seen}
        if sizes != {expected} or sorted(r for r, _, _ in seen) != list(range(expected)):
            raise WorldSizeMismatch(f"ranks disagree on the job's shape: {seen}")
        self.hostnames = sorted({host for _, _, host in seen})

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _common_wrap(self, model: nn.Module, channels_last: bool = True) -> nn.Module:
        """SyncBN, channels_last and torch.compile, as the config asks (before the engine wraps the model).

        ``channels_last=False``: keep the weights contiguous whatever the config says (DeepSpeed's ZeRO views each
        parameter as bytes to flatten it, which a channels_last weight, last stride C, refuses)."""
        if self.cfg.train.sync_bn and self.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.cfg.train.channels_last and channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.cfg.train.compile:
            # In place (nn.Module.compile), not torch.compile(model): the wrapper that returns would prefix every
            # state_dict key with ``_orig_mod.``, and checkpoints and exports must load into a plain model.
            model.compile()
        return model

    @abstractmethod
    def prepare(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        micro: int = 1,
        accumulation: int = 1,
        optimizer_state: dict | None = None,
    ):
        """Move/wrap ``model`` and ``optimizer`` for this engine and restore ``optimizer_state`` (torch's own format,
        from :meth:`optimizer_state`) into them; returns the ``(model, optimizer)`` to train with. Load checkpoint
        weights into ``model`` BEFORE this. ``micro`` and ``accumulation`` are the step's micro-batching."""

    @abstractmethod
    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context of forward passes (``self.precision``: bf16 or fp16 autocast, or nothing)."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of one micro-batch's ``loss`` (already scaled by its share of the step; no further
        scaling). Never updates the weights."""

    @abstractmethod
    def optimizer_step(self, optimizer) -> None:
        """Apply the gradients accumulated since the last step to the weights, then clear them."""

    @abstractmethod
    def no_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Context of one micro-batch's forward and backward: skips the gradient all-reduce unless ``last``."""

    @abstractmethod
    def unwrap(self, model: nn.Module) -> nn.Module:
        """The user's module inside what :meth:`prepare` returned."""

    def full_precision(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Context in which the user's module holds its fp32 master weights (DeepSpeed keeps 16-bit copies in it
        under bf16/fp16): what checkpoints and exports read. A collective: every rank enters it."""
        return contextlib.nullcontext()

    def model_state(self, model: nn.Module) -> dict:
        """The model's state_dict on the CPU in fp32 master precision. A collective: every rank calls it."""
        with self.full_precision(model):
            return {k: v.detach().cpu() for k, v in self.unwrap(model).state_dict().items()}

    @abstractmethod
    def optimizer_state(self, optimizer) -> dict:
        """The optimizer state in torch's own format (``state`` keyed by parameter index in param-group order), so a
        checkpoint resumes under either engine at any world size and loads with weights_only. A collective."""

    @property
    def amp_skipped(self) -> int:
        """Optimizer steps that fp16 loss scaling skipped over the whole run (0 for bf16 and fp32)."""
        return 0

    def amp_state(self) -> dict:
        """The loss scaler's state for a checkpoint (plain values; empty without fp16)."""
        return {}

    def load_amp_state(self, state: dict | None) -> None:  # noqa: B027 (a hook: engines without a scaler keep nothing)
        """Restore :meth:`amp_state` from a checkpoint (before or after ``prepare``)."""

    def set_lr(self, optimizer, lr: float) -> None:
        """Set the learning rate of every parameter group for the next :meth:`optimizer_step`."""
        for group in optimizer.param_groups:
            group["lr"] = lr

    def barrier(self) -> None:
        D.barrier()

    def close(self) -> None:
        """Leave the process group (the engine is unusable afterwards)."""
        D.destroy_process_group()
