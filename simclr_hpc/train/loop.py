"""The one step-based training loop that every stage runs.

Data comes in segments of ``train.ckpt_every_steps`` steps. Segment s reads a stream seeded from (seed, rank,
worker, s), and a checkpoint is written at every segment end, so a run resumed from any checkpoint sees exactly the
batches an uninterrupted run would have seen: resume is bitwise exact, not just "close".
"""

from __future__ import annotations

import logging
import math
import random
import time

import numpy as np
import torch

from simclr_hpc import distributed as D
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train.metrics import MetricsWriter, truncate_after
from simclr_hpc.train.optim import build_optimizer, lr_at, scaled_lr
from simclr_hpc.train.tracking import open_backends

log = logging.getLogger("simclr_hpc")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}
    np_state = np.random.get_state()
    state["numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    state["numpy_pos"] = int(np_state[2])
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))


def train(task, ctx) -> dict:
    """Train ``task`` to ``train.steps`` (resuming from the latest whole checkpoint), evaluate, export. Returns metrics."""
    cfg, engine = ctx.cfg, ctx.engine
    total, every = cfg.train.steps, cfg.train.ckpt_every_steps
    torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
    model = task.build()
    peak_lr = scaled_lr(cfg.optim, cfg.train.global_batch)
    optimizer = build_optimizer(model, cfg.optim, peak_lr)

    ckpt_root = ctx.run_dir / "checkpoints"
    start, skipped, optimizer_state = 0, 0, None
    latest = ckpt.latest_whole(ckpt_root)
    if latest is not None:
        state = ckpt.load_state(latest)
        model.load_state_dict(state["model"])
        optimizer_state = state.get("optimizer")
        _set_rng_state(state["rng"])
        start, skipped = int(state["step"]), int(state.get("skipped", 0))
        log.info("resuming %s from %s (step %d)", ctx.run_dir, latest.name, start)
    metrics_path = ctx.run_dir / "metrics.jsonl"
    logged_through = truncate_after(metrics_path, start) if engine.is_main else 0
    model, optimizer = engine.prepare(model, optimizer, ctx.micro, ctx.accumulation, optimizer_state)
    model.train()

    backends = open_backends(cfg, ctx.run_dir, task.stage, start, logged_through) if engine.is_main else []
    writer = MetricsWriter(metrics_path, total, start, engine.is_main, f"{task.stage} {cfg.run.name}", backends)
    step, images, loss_value = start, 0, float("nan")
    skipped_local = 0  # this rank's skipped samples since the last checkpoint; summed over ranks at each save
    t_train = time.perf_counter()
    t_log, images_log = t_train, 0
    try:
        while step < total:
            segment = step // every
            batches = iter(task.batches(segment))
            segment_end = min((segment + 1) * every, total)
            while step < segment_end:
                batch = next(batches)
                lr = lr_at(step, peak_lr, total, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
                engine.set_lr(optimizer, lr)
                loss = task.step(model, batch)
                engine.optimizer_step(optimizer)
                # Host sync every step: a NaN must be caught before it can reach a checkpoint.
                loss_value = float(loss.item())
                if not math.isfinite(loss_value):
                    good = ckpt.latest_whole(ckpt_root)
                    raise NonFiniteLoss(
                        f"loss is {loss_value} at step {step + 1} of {ctx.run_dir}; the last good checkpoint is "
                        f"{good.name if good else 'none'} (lower optim.base_lr, or check the data)"
                    )
                step += 1
                skipped_local += int(batch.get("skipped", 0))
                images += cfg.train.global_batch
                images_log += cfg.train.global_batch
                if step % cfg.train.log_every_steps == 0 or step == total:
                    now = time.perf_counter()
                    writer.log(step, {"loss": loss_value, "lr": lr, "img_per_s": images_log / max(now - t_log, 1e-9)})
                    t_log, images_log = now, 0
                else:
                    writer.advance(step)
            del batches  # stops this segment's loader workers before the next segment starts its own
            if step < total:
                skipped, skipped_local = skipped + _sum_over_ranks(skipped_local), 0
                writer.flush()  # the backends hold every step up to a checkpoint before it exists
                _save(ctx, task, model, optimizer, step, skipped, export=False)
        train_s = time.perf_counter() - t_train
        metrics = task.evaluate(model)
        writer.log_final(step, metrics)
        writer.flush()
        skipped, skipped_local = skipped + _sum_over_ranks(skipped_local), 0
        _save(ctx, task, model, optimizer, step, skipped, export=True)
    finally:
        writer.close()
    ctx.extra.update(skipped_samples=skipped, images_per_s=images / train_s if images else 0.0, loss=loss_value)
    return metrics


def _sum_over_ranks(count: int) -> int:
    return int(D.all_reduce_sum(torch.tensor([count], dtype=torch.int64)).item())


def _save(ctx, task, model, optimizer, step: int, skipped: int, export: bool) -> None:
    """Checkpoint (rank 0 writes; every rank waits so none runs ahead of a checkpoint that may be needed)."""
    engine = ctx.engine
    # Collectives under ZeRO (each rank holds a slice of the masters and the optimizer state): every rank calls them.
    model_state, optimizer_state = engine.model_state(model), engine.optimizer_state(optimizer)
    if engine.is_main:
        exported, arch = task.export(model)
        state = {"step": step, "skipped": skipped, "model": model_state, "optimizer": optimizer_state,
                 "rng": _rng_state()}
        if export:
            state["export"] = exported
        meta = {"stage": task.stage, "config_hash": ctx.cfg.hash(), "arch": arch, "world_size": engine.world_size}
        ckpt.save_checkpoint(ctx.run_dir / "checkpoints", step, state, meta, keep=ctx.cfg.train.keep_checkpoints)
    engine.barrier()
