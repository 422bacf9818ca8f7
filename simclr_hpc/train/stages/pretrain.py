"""Pretraining: SimCLR's NT-Xent over the global batch, exact with gradient caching when a device holds less."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.data import augment, pipeline
from simclr_hpc.losses import nt_xent
from simclr_hpc.models import Arch, build_simclr
from simclr_hpc.train.task import StageContext


class PretrainTask:
    """SimCLR: two views, NT-Xent over the global batch (exact with gradient caching when micro < per-device batch)."""

    stage = "pretrain"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.cfg = ctx.cfg

    def build(self) -> nn.Module:
        return build_simclr(self.cfg.model)

    def batches(self, segment: int) -> Iterator[dict]:
        cfg = self.cfg
        transform = augment.SimCLRViews(
            cfg.data.image_size, cfg.data.augment, cfg.data.color_strength, crop_min_scale=cfg.data.crop_min_scale,
            on_device=cfg.data.device_augment,
        )
        return pipeline.train_loader(
            cfg.data.shards, cfg.data.train_split, transform, self.ctx.per_device, cfg.run.seed,
            self.ctx.engine.rank, self.ctx.engine.world_size, segment, cfg.data.num_workers, on_error=cfg.data.on_error,
        )

    def _loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        gather = D.all_gather_with_grad if self.ctx.engine.world_size > 1 else None
        return nt_xent(z_a, z_b, self.cfg.pretrain.temperature, gather=gather, rank=self.ctx.engine.rank)

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        engine, device = self.ctx.engine, self.ctx.device
        views = [v.to(device, non_blocking=True) for v in batch["views"]]
        if self.cfg.data.device_augment:  # uint8 crops + per-view colour/blur parameters: finish them here
            half = len(views) // 2
            views = [augment.finish_on_device(v, p) for v, p in zip(views[:half], views[half:])]
        x_a, x_b = views
        if engine.cuda and self.cfg.train.channels_last:
            x_a, x_b = x_a.contiguous(memory_format=torch.channels_last), x_b.contiguous(memory_format=torch.channels_last)
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
        return {}

    def arch(self) -> Arch:
        return Arch("simclr", self.cfg.model)

    def export(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.ctx.engine.unwrap(model).state_dict().items()}

    def facts(self) -> dict[str, int]:
        return {}

    def subset(self) -> dict | None:
        return None
