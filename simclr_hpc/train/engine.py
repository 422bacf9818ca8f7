"""The distributed engine: the only module that knows Accelerate and DeepSpeed.

``Engine`` gives the loop one small surface whatever runs underneath: ``prepare``, ``autocast``, ``backward``,
``optimizer_step``, ``no_sync``, ``unwrap`` and model/optimizer state for checkpoints.

- ``dist.engine=ddp``: Accelerate. On a machine without CUDA it is forced onto its CPU backend (gloo, MULTI_CPU):
  without ``cpu=True`` Accelerate starts N processes that each train alone.
- ``dist.engine=deepspeed``: ``deepspeed.initialize`` with a JSON config derived from ours (micro batch, accumulation,
  world size, ZeRO stage, bf16 or fp16, offload), so the two never disagree.

Precision (``train.precision``, resolved per device by ``precision.py``): bf16 through Accelerate's autocast (DDP) or
torch's (DeepSpeed); fp16 through torch's autocast and our ``LossScaler`` (DDP: Accelerate's own scaler is hidden from
our checkpoints, so a resumed run could not continue with the same scale) or DeepSpeed's own dynamic loss scale.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.config import Config, ConfigError
from simclr_hpc.train import precision as P


class WorldSizeMismatch(RuntimeError):
    """Ranks disagree on the job's shape: some processes would train alone."""


def _want_cuda() -> bool:
    return torch.cuda.is_available()


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


def deepspeed_config(cfg: Config, world_size: int, micro: int, accumulation: int, precision: str) -> dict:
    """DeepSpeed's JSON, derived from our config so batch sizes and precision cannot contradict it.

    ``precision`` is the resolved one (``bf16``, ``fp16`` or ``fp32``); fp16 gets DeepSpeed's dynamic loss scale with
    the same policy as ``torch.amp.GradScaler`` (start at 2^16, halve on overflow, double after 2000 clean steps)."""
    zero: dict = {"stage": cfg.dist.zero_stage}
    if cfg.dist.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_batch_size": micro * accumulation * world_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 2000,
                 "hysteresis": 1, "min_loss_scale": 1},
        "gradient_clipping": 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }


class Engine:
    """One process's view of the job: device, rank, world size, and how to step a model."""

    def __init__(self, cfg: Config, env: D.DistEnv | None = None):
        self.cfg = cfg
        self.env = env or D.DistEnv.from_env()
        self.cuda = _want_cuda()
        self.precision = P.resolve_precision(cfg.train.precision, self.cuda, self.cuda and torch.cuda.is_bf16_supported())
        self.bf16, self.fp16 = self.precision == "bf16", self.precision == "fp16"
        self.kind = cfg.dist.engine
        timeout = datetime.timedelta(seconds=cfg.train.collective_timeout_s)
        backend = "nccl" if self.cuda else "gloo"
        if self.kind == "ddp":
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

            handlers = [DistributedDataParallelKwargs(broadcast_buffers=True)]
            if self.env.world_size > 1:
                # With a backend named, Accelerate skips creating a group for one process and then asks it for its size.
                handlers.append(InitProcessGroupKwargs(backend=backend, timeout=timeout))
            self.accelerator = Accelerator(
                cpu=not self.cuda, mixed_precision="bf16" if self.bf16 else "no", kwargs_handlers=handlers
            )
            self.device = self.accelerator.device
        else:
            if not self.cuda:
                os.environ.setdefault("DS_ACCELERATOR", "cpu")
            import deepspeed

            if not D.is_initialized():
                # DeepSpeed wants a process group even for one rank; give it the torchrun variables it reads.
                for key, value in (("RANK", self.env.rank), ("WORLD_SIZE", self.env.world_size),
                                   ("LOCAL_RANK", self.env.local_rank), ("MASTER_ADDR", self.env.master_addr),
                                   ("MASTER_PORT", self.env.master_port)):
                    os.environ.setdefault(key, str(value))
                deepspeed.init_distributed(dist_backend=backend, timeout=timeout, auto_mpi_discovery=False)
            self.device = torch.device("cuda", self.env.local_rank) if self.cuda else torch.device("cpu")
            if self.cuda:
                torch.cuda.set_device(self.device)
        self.rank = D.rank()
        self.world_size = D.world_size()
        self._check_world()
        self._ds_engine = None
        # DeepSpeed scales fp16 losses itself; under DDP we do, with a scaler whose state goes into checkpoints.
        self.scaler = P.LossScaler(self.precision if self.kind == "ddp" else "fp32", self.device)
        self._ds_skipped_before = 0

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

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, micro: int = 1, accumulation: int = 1,
                optimizer_state: dict | None = None):
        """Move/wrap ``model`` and ``optimizer`` for this engine and restore ``optimizer_state`` (torch's own format,
        from :meth:`optimizer_state`) into them. Load checkpoint weights into ``model`` BEFORE this."""
        if self.cfg.train.sync_bn and self.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.cuda and self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.cfg.train.compile:
            model = torch.compile(model)
        if self.kind == "ddp":
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
            model, optimizer = self.accelerator.prepare(model, optimizer)
            return model, optimizer
        import deepspeed

        # The client optimizer's parameters in group order: the index space of the saved optimizer state.
        self._param_groups = [list(group["params"]) for group in optimizer.param_groups]
        # Under bf16/fp16 DeepSpeed casts the module and copies its masters from the cast weights; keep the fp32 ones.
        masters = {n: p.detach().clone() for n, p in model.named_parameters()} if self.precision != "fp32" else None
        config = deepspeed_config(self.cfg, self.world_size, micro, accumulation, self.precision)
        engine, ds_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        self._ds_engine = engine
        if masters is not None and self._zero_mapped():
            from deepspeed.utils import safe_set_full_fp32_param

            for name, param in engine.module.named_parameters():
                safe_set_full_fp32_param(param, masters[name].to(self.device))
        if optimizer_state is not None:
            if self._zero_mapped():
                _set_partitioned_state(ds_optimizer, self._param_groups, optimizer_state)
            else:
                ds_optimizer.load_state_dict(optimizer_state)
        return engine, ds_optimizer

    def _zero_mapped(self) -> bool:
        """DeepSpeed keeps fp32 master weights and optimizer state in flat partitions (ZeRO 1/2, or bf16)."""
        return any(getattr(p, "_hp_mapping", None) is not None for group in self._param_groups for p in group)

    def autocast(self):
        if self.kind == "ddp" and not self.fp16:
            return self.accelerator.autocast()
        return P.autocast(self.precision, self.device)

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        """Backpropagate one micro-batch's loss (already scaled by its share of the step; no further scaling)."""
        if self.kind == "ddp":
            self.accelerator.backward(self.scaler.scale(loss))
        else:
            self._ds_engine.backward(loss, scale_wrt_gas=False)
            # DeepSpeed counts micro-batches and only updates at the accumulation boundary.
            self._ds_engine.step()

    def optimizer_step(self, optimizer) -> None:
        """Apply the step's gradients (DeepSpeed already did at its accumulation boundary). Under fp16 a step whose
        gradients overflowed is skipped (and counted in ``amp_skipped``)."""
        if self.kind == "ddp":
            self.scaler.step(optimizer)
            optimizer.zero_grad(set_to_none=True)

    @property
    def amp_skipped(self) -> int:
        """Optimizer steps fp16 loss scaling skipped over the whole run (0 for bf16 and fp32)."""
        if self.kind == "ddp" or self._ds_engine is None:
            return self.scaler.skipped + self._ds_skipped_before
        return self._ds_skipped_before + int(getattr(self._ds_engine, "skipped_steps", 0))

    def amp_state(self) -> dict:
        """The loss scaler's state for a checkpoint (plain values). DeepSpeed's own scale is not carried over: a resumed
        DeepSpeed fp16 run starts again at 2^16 and finds its scale within a few steps; the skipped count is kept."""
        if self.kind == "ddp":
            return self.scaler.state_dict()
        return {"scaler": {}, "skipped": self.amp_skipped}

    def load_amp_state(self, state: dict | None) -> None:
        """Restore :meth:`amp_state` from a checkpoint (before or after ``prepare``)."""
        if self.kind == "ddp":
            self.scaler.load_state_dict(state)
        elif state:
            self._ds_skipped_before = int(state.get("skipped", 0))

    def set_lr(self, optimizer, lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr

    def no_sync(self, model, last: bool):
        """Skip the gradient all-reduce for all but the last micro-batch of a step (DeepSpeed decides this itself)."""
        if self.kind == "ddp" and self.world_size > 1 and not last:
            return self.accelerator.no_sync(model)
        return contextlib.nullcontext()

    def unwrap(self, model: nn.Module) -> nn.Module:
        if self.kind == "ddp":
            return self.accelerator.unwrap_model(model)
        return model.module if hasattr(model, "module") else model

    def model_state(self, model: nn.Module) -> dict:
        """The model's state_dict on the CPU, with DeepSpeed's fp32 master weights in place of its bf16 copies.

        Under ZeRO the masters are split over the ranks: every rank must call this (it is a collective)."""
        module = self.unwrap(model)
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        if self.kind == "deepspeed" and self._zero_mapped():
            from deepspeed.utils import safe_get_full_fp32_param

            for name, param in module.named_parameters():
                full = safe_get_full_fp32_param(param)
                if full is not None:
                    state[name] = full.detach().cpu()
        return state

    def optimizer_state(self, optimizer) -> dict:
        """The optimizer state in torch's own format (``state`` keyed by parameter index in param-group order), whatever
        the engine, so a checkpoint resumes under DDP or DeepSpeed at any world size and loads with weights_only.

        Under ZeRO each rank holds a slice of every state tensor; the whole tensors are assembled here, so every rank
        must call this (it is a collective)."""
        if self.kind == "ddp" or not self._zero_mapped():
            return optimizer.state_dict()
        return _gather_partitioned_state(optimizer, self._param_groups)

    def barrier(self) -> None:
        D.barrier()

    def close(self) -> None:
        if self.kind == "ddp":
            self.accelerator.end_training()
        D.destroy_process_group()


def _gather_partitioned_state(ds_optimizer, param_groups: list[list[nn.Parameter]]) -> dict:
    """torch-format optimizer state assembled from DeepSpeed's flat fp32 partitions (ZeRO 1/2, bf16 optimizer).

    Each parameter's ``_hp_mapping`` says which fragment of it this rank holds (its place in the parameter and in the
    flat partition); every rank copies its fragments into a zero tensor of the parameter's size, and a sum over the
    ranks puts the whole tensor together."""
    base = ds_optimizer.optimizer  # the torch optimizer, stepping this rank's flat partitions
    state, groups, index = {}, [], 0
    for group, params in zip(base.param_groups, param_groups):
        flat = group["params"][0]
        flat_state = base.state.get(flat, {})
        # Every rank has the same keys: the flat partitions step together.
        tensor_keys = sorted(k for k, v in flat_state.items() if torch.is_tensor(v) and v.shape == flat.shape)
        scalars = {k: (v.clone().cpu() if torch.is_tensor(v) else v) for k, v in flat_state.items()
                   if k not in tensor_keys}  # e.g. Adam's step: one value for the whole group
        ids = []
        for param in params:
            mapping = getattr(param, "_hp_mapping", None)
            entry = {}
            for key in tensor_keys:
                full = torch.zeros(param.numel(), dtype=torch.float32, device=flat.device)
                if mapping is not None:  # this rank holds a fragment of the parameter
                    lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
                    full.narrow(0, lp.start, lp.numel).copy_(flat_state[key].narrow(0, hp.start, hp.numel))
                entry[key] = D.all_reduce_sum(full).reshape(param.shape).cpu()
            if entry:
                state[index] = {**entry, **scalars}
            ids.append(index)
            index += 1
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
    return {"state": state, "param_groups": groups}


def _set_partitioned_state(ds_optimizer, param_groups: list[list[nn.Parameter]], saved: dict) -> None:
    """Write torch-format optimizer state into this rank's flat partitions (the inverse of the gather above).

    The flat state tensors are created here; the base optimizer finds them at its first step and uses them (torch's
    optimizers only initialise missing state), and DeepSpeed links its per-parameter views to them then."""
    base = ds_optimizer.optimizer
    index = 0
    for group, params in zip(base.param_groups, param_groups):
        flat = group["params"][0]
        flat_state = base.state[flat]
        for param in params:
            entry = saved["state"].get(index, {})
            index += 1
            mapping = getattr(param, "_hp_mapping", None)
            for key, value in entry.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    if key not in flat_state:
                        flat_state[key] = torch.zeros_like(flat)
                    if mapping is not None:  # this rank holds a fragment of the parameter
                        lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
                        src = value.to(flat.device, flat.dtype).flatten().narrow(0, lp.start, lp.numel)
                        flat_state[key].narrow(0, hp.start, hp.numel).copy_(src)
                else:
                    flat_state[key] = value.clone().to(flat.device) if torch.is_tensor(value) else value
    for group, saved_group in zip(base.param_groups, saved["param_groups"]):
        for key, value in saved_group.items():
            if key not in ("params", "lr"):
                group[key] = value
