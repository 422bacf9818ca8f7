"""The DeepSpeed engine: ``deepspeed.initialize`` with a JSON config derived from ours (micro batch, accumulation,
world size, ZeRO stage, bf16, offload), so the two never disagree. The only module that imports DeepSpeed.

DeepSpeed counts micro-batches itself and updates the weights inside its ``step()`` at its accumulation boundary; a
``step()`` between boundaries only advances that count. So :meth:`DeepSpeedEngine.backward` calls ``step()`` after
every micro-batch but the last (counting only), and :meth:`DeepSpeedEngine.optimizer_step` makes the boundary call
that updates: DeepSpeed sees the same call sequence as ever, and the two methods mean what they do under DDP.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from types import SimpleNamespace

import torch
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.config import Config
from simclr_hpc.train import precision as P
from simclr_hpc.train import zero_state
from simclr_hpc.train.engine import Engine
from simclr_hpc.train.optim import LARS


def deepspeed_config(cfg: Config, world_size: int, micro: int, accumulation: int, precision: str) -> dict:
    """DeepSpeed's JSON, derived from our config so batch sizes and precision cannot contradict it.

    ``precision`` is the resolved one (``bf16``, ``fp16`` or ``fp32``); fp16 gets DeepSpeed's dynamic loss scale with
    the same policy as ``torch.amp.GradScaler`` (start at 2^16, halve on overflow, double after 2000 clean steps)."""
    zero: dict = {"stage": cfg.dist.zero_stage}
    # DeepSpeed (0.17+) casts the parameters to 16 bits but leaves the buffers in fp32 unless told: BatchNorm then has
    # bf16 weights and fp32 running statistics, which its kernels refuse. Cast both, as module.bfloat16() did.
    buffers = {"bf16": {"buffer_dtype": "bf16"}, "fp16": {"buffer_dtype": "fp16"}}.get(precision)
    if cfg.dist.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        **({"data_types": buffers} if buffers else {}),
        "train_batch_size": micro * accumulation * world_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {
            "enabled": precision == "fp16",
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 2000,
            "hysteresis": 1,
            "min_loss_scale": 1,
        },
        "gradient_clipping": 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }


def _skip_the_shm_comm_build() -> None:
    """DeepSpeed's CPU backend compiles a C++ op, ``deepspeed_shm_comm``, when its process group starts: 30-150 s on 2
    cores wherever torch's extension cache is cold or stale (a fresh machine, a container). Only its
    ``inference_all_reduce`` uses it; training's collectives are torch.distributed's. Marked incompatible in
    DeepSpeed's table of ops (a dict it keeps so that edits persist), it is never built."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class DeepSpeedEngine(Engine):
    """ZeRO data parallel: optimizer state (stage 1) and gradients (stage 2) partitioned over the ranks."""

    def __init__(self, cfg: Config, env: D.DistEnv | None = None):
        super().__init__(cfg, env)
        if not self.cuda:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed  # after DS_ACCELERATOR: DeepSpeed picks its accelerator at import

        if not self.cuda:
            _skip_the_shm_comm_build()
        if not D.is_initialized():
            # DeepSpeed wants a process group even for one rank; give it the torchrun variables it reads.
            for key, value in (
                ("RANK", self.env.rank),
                ("WORLD_SIZE", self.env.world_size),
                ("LOCAL_RANK", self.env.local_rank),
                ("MASTER_ADDR", self.env.master_addr),
                ("MASTER_PORT", self.env.master_port),
            ):
                os.environ.setdefault(key, str(value))
            timeout = datetime.timedelta(seconds=cfg.train.collective_timeout_s)
            deepspeed.init_distributed(dist_backend=self.backend, timeout=timeout, auto_mpi_discovery=False)
        self._ds = None  # the DeepSpeed engine, from prepare()
        self._masters: zero_state.Masters | None = None  # the fp32 master weights, from prepare()
        self._skipped_before = 0  # fp16 steps skipped before this run resumed (DeepSpeed counts only its own)
        self._param_groups: list[list[nn.Parameter]] = []
        self._joined()

    def prepare(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        micro: int = 1,
        accumulation: int = 1,
        optimizer_state: dict | None = None,
    ):
        import deepspeed

        model = self._common_wrap(model, channels_last=False)  # ZeRO flattens contiguous weights only
        # The client optimizer's parameters in group order: the index space of the saved optimizer state.
        self._param_groups = [list(group["params"]) for group in optimizer.param_groups]
        # Under bf16/fp16 DeepSpeed casts the module and copies its masters from the cast weights; keep the fp32 ones.
        masters = {n: p.detach().clone() for n, p in model.named_parameters()} if self.precision != "fp32" else None
        config = deepspeed_config(self.cfg, self.world_size, micro, accumulation, self.precision)
        # DeepSpeed takes cuda:LOCAL_RANK unless told the device (a task bound to one GPU sees it as cuda:0).
        args = SimpleNamespace(device_rank=self.device.index) if self.cuda else None
        self._ds, ds_optimizer, _, _ = deepspeed.initialize(args=args, model=model, optimizer=optimizer, config=config)
        self._masters = zero_state.Masters(ds_optimizer, self._param_groups)
        if self._masters.separate and not self._masters.flat:
            # DeepSpeed's unfused fp16/bf16 wrapper (ZeRO 0) "initialises the optimizer states" by a step on zero
            # gradients: with weight decay that is a real step (LARS: a whole one), and it leaves momentum and Adam's
            # step count behind. Forget that state; the masters are restored just below.
            self._base(ds_optimizer).state.clear()
        if masters is not None:
            for name, param in self._ds.module.named_parameters():
                self._masters.set(param, masters[name].to(self.device))
        if isinstance(optimizer, LARS) and self._masters.flat:
            # LARS needs each parameter's norms; ZeRO hands it flat slices of many (optim.LARS.set_partitions).
            optimizer.set_partitions(zero_state.partition_slots(ds_optimizer, self._param_groups), D.all_reduce_sum)
        if optimizer_state is not None:
            if self._masters.flat:
                zero_state.scatter_state(ds_optimizer, self._param_groups, optimizer_state)
            else:
                self._base(ds_optimizer).load_state_dict(optimizer_state)
        return self._ds, ds_optimizer

    @staticmethod
    def _base(ds_optimizer):
        """The torch optimizer itself: under DeepSpeed's unfused fp16/bf16 wrapper (ZeRO 0) it steps the fp32
        masters, one per parameter, so its state_dict is torch's own format."""
        return getattr(ds_optimizer, "optimizer", ds_optimizer)

    def autocast(self):
        return P.autocast(self.precision, self.device)

    @property
    def amp_skipped(self) -> int:
        return self._skipped_before + int(getattr(self._ds, "skipped_steps", 0) if self._ds is not None else 0)

    def amp_state(self) -> dict:
        """DeepSpeed's own loss scale is not carried over: a resumed fp16 run starts again at 2^16 and finds its scale
        within a few steps; the skipped count is kept."""
        return {"scaler": {}, "skipped": self.amp_skipped} if self.fp16 else {}

    def load_amp_state(self, state: dict | None) -> None:
        if state:
            self._skipped_before = int(state.get("skipped", 0))

    def backward(self, loss: torch.Tensor) -> None:
        self._ds.backward(loss, scale_wrt_gas=False)
        if not self._ds.is_gradient_accumulation_boundary():
            self._ds.step()  # not the step's last micro-batch: DeepSpeed only counts it (see the module doc)

    def optimizer_step(self, optimizer) -> None:
        # The boundary call: DeepSpeed steps its optimizer and clears the gradients.
        self._ds.step()

    def no_sync(self, model: nn.Module, last: bool):
        return contextlib.nullcontext()  # DeepSpeed reduces gradients at its accumulation boundary by itself

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if hasattr(model, "module") else model

    @contextlib.contextmanager
    def full_precision(self, model: nn.Module):
        """The module holds DeepSpeed's fp32 masters (and fp32 buffers) inside, its 16-bit weights again after. A
        collective under ZeRO 1/2, whose masters are split over the ranks."""
        module = self.unwrap(model)
        if self._masters is None or not self._masters.separate:
            yield
            return
        kept = [(t, t.data) for t in module.parameters()] + [(b, b.data) for b in module.buffers()]
        try:
            for param in module.parameters():
                master = self._masters.get(param)
                param.data = master.detach().clone() if master is not None else param.data.float()
            for buffer in module.buffers():
                if buffer.is_floating_point():
                    buffer.data = buffer.data.float()
            yield
        finally:
            for tensor, data in kept:
                tensor.data = data

    def optimizer_state(self, optimizer) -> dict:
        if not self._masters.flat:
            return self._base(optimizer).state_dict()
        return zero_state.gather_state(optimizer, self._param_groups)
