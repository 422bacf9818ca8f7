"""Pretraining: SimCLR's NT-Xent over the global batch, exact with gradient caching when a device holds less; online
monitoring (``monitor.py``) every ``pretrain.monitor_every_steps`` steps and at the end."""

from __future__ import annotations

import time
from typing import Iterator

import torch
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.config import ConfigError
from simclr_hpc.data import augment, pipeline
from simclr_hpc.data.device_decode import DeviceDecodeViews
from simclr_hpc.data.index import read_index
from simclr_hpc.losses import nt_xent
from simclr_hpc.models import Arch, build_simclr
from simclr_hpc.train.monitor import PretrainMonitor
from simclr_hpc.train.stages.loaders import train_stream
from simclr_hpc.train.task import StageContext


class PretrainTask:
    """SimCLR: two views, NT-Xent over the global batch (exact with gradient caching when micro < per-device batch)."""

    stage = "pretrain"
    fitted_by_build = False

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self._monitor: PretrainMonitor | None = None
        self._decoder: DeviceDecodeViews | None = None
        """``data.decode_on_device``: the transform whose ``finish`` the step calls."""
        self._monitored: dict = {}
        """The last monitor measurement, and the step it was made at (``step``)."""
        self._monitor_s = self._monitor_cpu_s = 0.0
        """Seconds (wall, CPU) this session spent monitoring, the monitor's one-off image decoding included."""

    def build(self) -> nn.Module:
        if self.cfg.pretrain.monitor_every_steps:
            t0, c0 = time.perf_counter(), time.process_time()
            self._monitor = PretrainMonitor(self.cfg, self.ctx.device, self.ctx.engine.autocast)
            self._monitor_s += time.perf_counter() - t0
            self._monitor_cpu_s += time.process_time() - c0
        return build_simclr(self.cfg.model)

    def monitor(self, model: nn.Module, step: int) -> dict:
        every = self.cfg.pretrain.monitor_every_steps
        if self._monitor is None or (step % every and step != self.cfg.train.steps):
            return {}
        measured = self._monitor.measure(self.ctx.engine.unwrap(model))
        self._monitor_s += measured["monitor_s"]
        self._monitor_cpu_s += measured["monitor_cpu_s"]
        self._monitored = {**measured, "step": step}
        return measured

    def batches(self, first_segment: int) -> Iterator[dict]:
        cfg = self.cfg
        return pipeline.train_loader(
            cfg.data.shards,
            cfg.data.train_split,
            self._transform(),
            **train_stream(self.ctx, first_segment),
        )

    def _transform(self):
        """The two-view augmentation: decoded and made on the device (``data.decode_on_device``), batched when the
        shards' images all have one size (``data.batch_augment``), else image by image."""
        data = self.cfg.data
        if data.decode_on_device:
            if read_index(data.shards).image_format != "jpg":
                raise ConfigError(
                    f"data.decode_on_device: {data.shards} holds PNG shards; it reads JPEG shards "
                    "(build them with `simclr-hpc data shards ... --image-format jpg`) or set it false"
                )
            self._decoder = DeviceDecodeViews(data.image_size, **augment.view_options(data))
            return self._decoder
        image_hw = read_index(data.shards).image_size if data.batch_augment and not data.device_augment else None
        if image_hw:
            return augment.SimCLRBatchViews(data.image_size, image_hw, **augment.view_options(data))
        return augment.SimCLRViews(data.image_size, on_device=data.device_augment, **augment.view_options(data))

    def _loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        gather = D.all_gather_with_grad if self.ctx.engine.world_size > 1 else None
        return nt_xent(z_a, z_b, self.cfg.pretrain.temperature, gather=gather, rank=self.ctx.engine.rank)

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        engine, device = self.ctx.engine, self.ctx.device
        if self._decoder is not None:  # JPEG files and view parameters: decoded and made into views here
            views = list(self._decoder.finish(batch["views"], device))
        else:
            views = [v.to(device, non_blocking=True) for v in batch["views"]]
        if (
            self.cfg.data.device_augment and self._decoder is None
        ):  # uint8 crops + per-view colour/blur parameters: finish them here
            half = len(views) // 2
            views = [augment.finish_on_device(v, p) for v, p in zip(views[:half], views[half:])]
        x_a, x_b = views
        if self.cfg.train.channels_last:
            x_a, x_b = (
                x_a.contiguous(memory_format=torch.channels_last),
                x_b.contiguous(memory_format=torch.channels_last),
            )
        n, m = x_a.shape[0], self.ctx.micro
        if m >= n:
            # Both views in one forward pass: BN sees 2n images, and DDP sees one forward per backward.
            with engine.autocast():
                z = model(torch.cat([x_a, x_b]))
            loss = self._loss(z[:n], z[n:])
            engine.backward(loss)
            return loss.detach()
        return self._cached_step(model, x_a, x_b, m)

    def _cached_step(self, model: nn.Module, x_a: torch.Tensor, x_b: torch.Tensor, m: int) -> torch.Tensor:
        """Gradient caching (Gao et al. 2021): the exact full-batch NT-Xent when only ``m`` images fit at once.

        1. embed every chunk without a graph; 2. loss and d(loss)/dz on the whole batch; 3. re-embed each chunk with a
        graph and backpropagate that cached dz. Plain accumulation would see negatives only within a micro-batch:
        a different, weaker loss. BN statistics are per chunk (as they are per device in DDP without SyncBN).
        """
        engine = self.ctx.engine
        chunks = [(x_a[i : i + m], x_b[i : i + m]) for i in range(0, x_a.shape[0], m)]
        with torch.no_grad():
            zs = []
            for c_a, c_b in chunks:
                with engine.autocast():
                    zs.append(model(torch.cat([c_a, c_b])).float())
        z_a = torch.cat([z[: len(z) // 2] for z in zs]).requires_grad_(True)
        z_b = torch.cat([z[len(z) // 2 :] for z in zs]).requires_grad_(True)
        loss = self._loss(z_a, z_b)
        loss.backward()  # gradients w.r.t. the embeddings only; collectives in the gather's backward run here
        g_a, g_b = z_a.grad.split(m), z_b.grad.split(m)
        for i, (c_a, c_b) in enumerate(chunks):
            last = i == len(chunks) - 1
            with engine.no_sync(model, last):
                with engine.autocast():
                    z = model(torch.cat([c_a, c_b])).float()
                surrogate = (z * torch.cat([g_a[i], g_b[i]])).sum()
                engine.backward(surrogate)
        return loss.detach()

    def evaluate(self, model: nn.Module) -> dict:
        """The monitor's numbers for the final model (measured now if this session did not reach the last step) and
        the seconds monitoring cost this session (``monitor_s_total``)."""
        if self._monitor is None:
            return {}
        if self._monitored.get("step") != self.cfg.train.steps:
            self.monitor(model, self.cfg.train.steps)
        out = {k: v for k, v in self._monitored.items() if k not in ("step", "monitor_s", "monitor_cpu_s")}
        return {
            **out,
            "eval_images": out["knn_eval_images"],
            "monitor_split": self._monitor.query_split,
            "monitor_s_total": self._monitor_s,
            "monitor_cpu_s_total": self._monitor_cpu_s,
        }

    def arch(self) -> Arch:
        return Arch("simclr", self.cfg.model)

    def export(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.ctx.engine.unwrap(model).state_dict().items()}

    def facts(self) -> dict[str, int]:
        return {}

    def subset(self) -> dict | None:
        return None
