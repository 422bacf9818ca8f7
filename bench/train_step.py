"""Training step: pretrain images/s of our framework vs a minimal plain-PyTorch loop, data loading excluded.

Ours: the real pieces the loop runs (``Engine`` on Accelerate, ``PretrainTask.step``, LARS from ``build_optimizer``,
the LR schedule, the per-step host sync on the loss). Baseline: the same model (``build_simclr``), the same loss
(``nt_xent``) and the same LARS, in the ten lines a PyTorch user would write. Both train on one pre-built batch of
in-memory tensors (two views of ``batch`` images), alternating one step at a time after a warm-up step each.

ResNet-18 with the CIFAR stem at 32 px and batch 256 takes over a minute per step at width 1.0 on this 2-core
machine: the width is halved until a step takes under 10 s (recorded in the result row).
"""

from __future__ import annotations

import math
import tempfile
import time

import torch

from bench._common import Row, alternate, log, median

IMAGE = 32


def _config(tmp: str, width: float, batch: int):
    from simclr_hpc.config import load_config

    return load_config(
        None,
        [
            f"run.root={tmp}",
            "run.name=bench",
            f"model.width={width}",
            f"train.global_batch={batch}",
            "train.steps=1000",
            "data.num_workers=0",
        ],
    )


def _batch(batch: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    views = tuple(torch.randn(batch, 3, IMAGE, IMAGE, generator=gen) for _ in range(2))
    return {"views": views, "y": torch.zeros(batch, dtype=torch.long), "keys": [], "skipped": 0}


class Ours:
    """The framework's step: Engine + PretrainTask.step + LARS + schedule, as ``loop.train`` drives them."""

    def __init__(self, cfg, batch: dict):
        from pathlib import Path

        from simclr_hpc.train.engines import create_engine
        from simclr_hpc.train.optim import build_optimizer, scaled_lr
        from simclr_hpc.train.stages import PretrainTask
        from simclr_hpc.train.task import StageContext

        self.cfg, self.batch = cfg, batch
        self.engine = create_engine(cfg)
        n = cfg.train.global_batch
        ctx = StageContext(cfg, self.engine, Path(cfg.run.root), n, n, 1)
        self.task = PretrainTask(ctx)
        torch.manual_seed(0)
        model = self.task.build()
        self.peak_lr = scaled_lr(cfg.optim, n)
        optimizer = build_optimizer(model, cfg.optim, self.peak_lr)
        self.model, self.optimizer = self.engine.prepare(model, optimizer)
        self.model.train()
        self.step_i = 0

    def step(self) -> float:
        from simclr_hpc.train.optim import lr_at

        cfg = self.cfg
        lr = lr_at(self.step_i, self.peak_lr, cfg.train.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
        self.engine.set_lr(self.optimizer, lr)
        loss = self.task.step(self.model, self.batch)
        self.engine.optimizer_step(self.optimizer)
        value = float(loss.item())
        assert math.isfinite(value)
        self.step_i += 1
        return value

    def close(self) -> None:
        self.engine.close()


class Plain:
    """What a user writes by hand: same model, loss and optimizer; no engine, task or schedule object."""

    def __init__(self, cfg, batch: dict):
        from simclr_hpc.models import build_simclr
        from simclr_hpc.train.optim import build_optimizer, lr_at, scaled_lr

        torch.manual_seed(0)
        self.model = build_simclr(cfg.model)
        self.peak_lr = scaled_lr(cfg.optim, cfg.train.global_batch)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.peak_lr)
        self.lr_at, self.cfg, self.step_i = lr_at, cfg, 0
        self.x = torch.cat(batch["views"])
        self.n = batch["views"][0].shape[0]

    def step(self) -> float:
        from simclr_hpc.losses import nt_xent

        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step_i, self.peak_lr, cfg.train.steps, cfg.optim.warmup_steps)
        z = self.model(self.x)
        loss = nt_xent(z[: self.n], z[self.n :], cfg.pretrain.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_i += 1
        return float(loss.item())


def run(batch: int = 256, widths=(0.5, 0.25, 0.125), reps: int = 5, max_step_s: float = 10.0) -> list[Row]:
    data = _batch(batch)
    with tempfile.TemporaryDirectory(prefix="bench-train-step-") as tmp:
        for width in widths:
            cfg = _config(tmp, width, batch)
            plain = Plain(cfg, data)
            t0 = time.perf_counter()
            plain.step()  # warm-up, and the size probe
            probe = time.perf_counter() - t0
            log(f"train_step: width {width} batch {batch}: plain step {probe:.1f}s")
            if probe <= max_step_s or width == widths[-1]:
                break
        ours = Ours(cfg, data)
        try:
            ours.step()  # warm-up
            times = alternate({"ours": lambda: _time(ours.step), "plain": lambda: _time(plain.step)}, reps, warmup=0)
        finally:
            ours.close()
    t_ours, t_plain = median(times["ours"]), median(times["plain"])
    ips_ours, ips_plain = batch / t_ours, batch / t_plain
    log(f"train_step: ours {ips_ours:.1f} img/s, plain {ips_plain:.1f} img/s, ratio {ips_ours / ips_plain:.3f}")
    note = (
        f"ResNet-18 CIFAR stem, width {width} (width 1.0 takes > {max_step_s:.0f} s/step on this machine), "
        f"{IMAGE}px, batch {batch} x 2 views, LARS, {reps} steps each after warm-up; median s/step ours "
        f"{t_ours:.2f}, plain {t_plain:.2f}"
    )
    return [
        Row(
            "train_step",
            f"resnet18 w{width} b{batch}",
            "images/s",
            ips_ours,
            ips_plain,
            ips_ours / ips_plain,
            ">= 0.95",
            note,
        )
    ]


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
