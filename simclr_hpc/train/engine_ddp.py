"""The DDP engine: Accelerate's ``Accelerator`` (the only module that imports Accelerate).

On a machine without CUDA it is forced onto its CPU backend (gloo, MULTI_CPU): without ``cpu=True`` Accelerate starts
N processes that each train alone.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.config import Config
from simclr_hpc.train import precision as P
from simclr_hpc.train.engine import Engine


class DDPEngine(Engine):
    """Data parallel with every rank holding the whole model and optimizer state."""

    def __init__(self, cfg: Config, env: D.DistEnv | None = None):
        super().__init__(cfg, env)
        handlers = [DistributedDataParallelKwargs(broadcast_buffers=True)]
        if self.env.world_size > 1:
            # With a backend named, Accelerate skips creating a group for one process and then asks it for its size.
            timeout = datetime.timedelta(seconds=cfg.train.collective_timeout_s)
            handlers.append(InitProcessGroupKwargs(backend=self.backend, timeout=timeout))
        if self.cuda:
            # Accelerate wraps DDP with device_ids=[LOCAL_RANK], an invalid ordinal where a site binds one GPU per
            # task; with this it leaves device_ids to DDP, which takes the module's device (self.device).
            os.environ["ACCELERATE_BYPASS_DEVICE_MAP"] = "true"
        self.accelerator = Accelerator(
            cpu=not self.cuda, mixed_precision="bf16" if self.bf16 else "no", kwargs_handlers=handlers
        )
        if self.cuda and self.accelerator.device != self.device:
            raise RuntimeError(
                f"Accelerate chose {self.accelerator.device} for local rank {self.env.local_rank}, not {self.device}"
            )
        # fp16 is scaled by our own LossScaler, not Accelerate's: its state must go into our checkpoints so a resumed
        # run continues with the same loss scale.
        self.scaler = P.LossScaler(self.precision, self.device)
        self._joined()

    def prepare(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        micro: int = 1,
        accumulation: int = 1,
        optimizer_state: dict | None = None,
    ):
        model = self._common_wrap(model)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        return self.accelerator.prepare(model, optimizer)

    def autocast(self):
        if self.fp16:
            return P.autocast(self.precision, self.device)
        return self.accelerator.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(self.scaler.scale(loss))

    def optimizer_step(self, optimizer) -> None:
        """Apply the step (under fp16 a step whose gradients overflowed is skipped and counted), then clear."""
        self.scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    @property
    def amp_skipped(self) -> int:
        return self.scaler.skipped

    def amp_state(self) -> dict:
        return self.scaler.state_dict()

    def load_amp_state(self, state: dict | None) -> None:
        self.scaler.load_state_dict(state)

    def no_sync(self, model: nn.Module, last: bool):
        if self.world_size > 1 and not last:
            return self.accelerator.no_sync(model)
        return contextlib.nullcontext()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def optimizer_state(self, optimizer) -> dict:
        return optimizer.state_dict()

    def close(self) -> None:
        """End training, leave the process group and forget Accelerate's process-wide state (a singleton), so that
        the next run in this process (a local worker runs several) sets itself up afresh."""
        self.accelerator.end_training()
        super().close()
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
