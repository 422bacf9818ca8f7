"""The one step-based training loop that every stage runs.

Data comes in segments of ``train.ckpt_every_steps`` steps. Segment s reads streams seeded from (seed, rank,
stream, s), and a checkpoint is written at every segment end, so a run resumed from any checkpoint sees exactly the
batches an uninterrupted run would have seen: resume is bitwise exact, not just "close". One loader serves the whole
run (``task.batches(first_segment)``, built once: its workers, shuffle buffers and parsed index live across
checkpoints); a resumed run builds its one loader at the checkpoint's segment.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from simclr_hpc import distributed as D
from simclr_hpc import rundir
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train import preempt
from simclr_hpc.train.metrics import MetricsWriter, truncate_after
from simclr_hpc.train.optim import build_optimizer, lr_at, scaled_lr
from simclr_hpc.train.task import StageContext, Task, TrainOutcome
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


@dataclass
class _Progress:
    """Where a training session stands (this process's view)."""

    step: int
    skipped: int
    """Corrupt samples skipped, summed over ranks, up to the last checkpoint."""
    skipped_local: int = 0
    """This rank's skipped samples since the last checkpoint; summed over ranks at each save."""
    images: int = 0
    loss: float = float("nan")
    images_log: int = 0
    t_log: float = field(default_factory=time.perf_counter)
    resumed: dict = field(default_factory=dict)
    """``resumed_from`` and ``steps_redone`` of a resumed run, logged once with its first metrics line."""
    preempted: bool = False
    """Every rank saw the preemption signal's flag (one collective per step): stop after this step."""
    unread: list = field(default_factory=list)
    """``(step, loss tensor)`` of the steps whose loss is still on the device (see :meth:`read_losses`)."""

    def settle_skipped(self) -> None:
        """Add every rank's skips since the last checkpoint to ``skipped`` (a collective: every rank calls it)."""
        self.skipped, self.skipped_local = self.skipped + D.host_sum([self.skipped_local])[0], 0

    def read_losses(self, run_dir) -> None:
        """Bring the unread losses to the host (one sync for all of them; ``loss`` becomes the newest) and stop at the
        first that is not finite. Called at every logged step and at every segment's end, so a NaN never reaches a
        checkpoint; the steps between cost no host sync (a GPU would otherwise drain its queue every step)."""
        if not self.unread:
            return
        values = torch.stack([loss.float() for _, loss in self.unread]).tolist()
        steps, self.unread = [step for step, _ in self.unread], []
        for step, value in zip(steps, values):
            if not math.isfinite(value):
                good = ckpt.latest_whole(rundir.checkpoints_dir(run_dir))
                raise NonFiniteLoss(
                    f"loss is {value} at step {step} of {run_dir}; the last good checkpoint is "
                    f"{good.name if good else 'none'} (lower optim.base_lr, or check the data)"
                )
        self.loss = values[-1]


def train(task: Task, ctx: StageContext) -> TrainOutcome:
    """Train ``task`` to ``train.steps`` (resuming from the latest whole checkpoint; no step for a task whose
    ``build()`` fitted the model), evaluate, export."""
    cfg, engine = ctx.cfg, ctx.engine
    torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
    model = task.build()
    total = 0 if task.fitted_by_build else cfg.train.steps
    peak_lr = scaled_lr(cfg.optim, cfg.train.global_batch)
    optimizer = build_optimizer(model, cfg.optim, peak_lr)
    start, skipped, optimizer_state = _resume(ctx, model)
    metrics_path = rundir.metrics_path(ctx.run_dir)
    resumed, logged_through = {}, 0
    if engine.is_main:
        if start:
            resumed = {"resumed_from": start, "steps_redone": preempt.steps_redone(metrics_path, start)}
        logged_through = truncate_after(metrics_path, start)
    model, optimizer = engine.prepare(model, optimizer, ctx.micro, ctx.accumulation, optimizer_state)
    model.train()

    backends = open_backends(cfg, ctx.run_dir, task.stage, start, logged_through) if engine.is_main else []
    writer = MetricsWriter(
        metrics_path, cfg.train.steps, start, engine.is_main, f"{task.stage} {cfg.run.name}", backends
    )
    progress = _Progress(start, skipped, resumed=resumed)
    t_train = time.perf_counter()
    previous_handler = preempt.install()
    batches = _training_batches(task, cfg, progress.step)
    try:
        while progress.step < total and not progress.preempted:
            _run_segment(task, ctx, model, optimizer, peak_lr, progress, writer, batches)
            if progress.step < total:
                progress.settle_skipped()
                writer.flush()  # the backends hold every step up to a checkpoint before it exists
                _save(ctx, task, model, optimizer, progress.step, progress.skipped, export=False)
        if progress.preempted:
            log.info("preemption signal: checkpoint of step %d written, stopping for the requeue", progress.step)
            preempt.clear()  # acted on: a run resumed in this same process must not stop again at once
            raise preempt.Preempted(progress.step, ctx.run_dir)
        train_s = time.perf_counter() - t_train
        batches = None  # the loader's workers end before evaluation starts its own
        metrics = task.evaluate(model)
        writer.log_final(progress.step, metrics)
        writer.flush()
        progress.settle_skipped()
        _save(ctx, task, model, optimizer, progress.step, progress.skipped, export=True)
    finally:
        preempt.restore(previous_handler)
        writer.close()
    images_per_s = progress.images / train_s if progress.images else 0.0
    return TrainOutcome(metrics, progress.loss, progress.step, progress.skipped, images_per_s)


def _resume(ctx: StageContext, model) -> tuple[int, int, dict | None]:
    """Load the latest whole checkpoint into ``model`` and the RNGs: (step, skipped samples, optimizer state)."""
    latest = ckpt.latest_whole(rundir.checkpoints_dir(ctx.run_dir))
    if latest is None:
        return 0, 0, None
    state = ckpt.load_state(latest)
    model.load_state_dict(state["model"])
    _set_rng_state(state["rng"])
    ctx.engine.load_amp_state(state.get("amp"))  # fp16: the same loss scale (and skipped count) as before the stop
    start = int(state["step"])
    log.info("resuming %s from %s (step %d)", ctx.run_dir, latest.name, start)
    return start, int(state.get("skipped", 0)), state.get("optimizer")


def _training_batches(task: Task, cfg, step: int) -> Iterator[dict]:
    """The run's one iterator of training batches, from run step ``step`` on."""
    segment = step // cfg.train.ckpt_every_steps
    batches = iter(task.batches(segment))
    for _ in range(step - segment * cfg.train.ckpt_every_steps):  # resumed mid-segment (saved at a signal)
        next(batches)
    return batches


def _run_segment(
    task: Task,
    ctx: StageContext,
    model,
    optimizer,
    peak_lr: float,
    progress: _Progress,
    writer: MetricsWriter,
    batches: Iterator[dict],
) -> None:
    """Train the rest of the data segment ``progress.step`` is in (up to its checkpoint, or the last step)."""
    cfg, engine, total = ctx.cfg, ctx.engine, ctx.cfg.train.steps
    segment = progress.step // cfg.train.ckpt_every_steps
    segment_end = min((segment + 1) * cfg.train.ckpt_every_steps, total)
    while progress.step < segment_end and not progress.preempted:
        batch = next(batches)
        lr = lr_at(progress.step, peak_lr, total, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
        engine.set_lr(optimizer, lr)
        loss = task.step(model, batch)
        engine.optimizer_step(optimizer)
        progress.step += 1
        progress.unread.append((progress.step, loss))  # read on the host only at logged steps (read_losses)
        progress.skipped_local += int(batch.get("skipped", 0))
        progress.images += cfg.train.global_batch
        progress.images_log += cfg.train.global_batch
        # Every rank, every step (one collective, on the host): they all stop after the same step. The last just ends.
        progress.preempted = preempt.stop_requested() and progress.step < total
        logged = progress.preempted or progress.step % cfg.train.log_every_steps == 0 or progress.step == total
        if logged:
            progress.read_losses(ctx.run_dir)  # the host sync of a logged step: images/s then counts finished work
        now = time.perf_counter()
        monitored = task.monitor(model, progress.step)
        if monitored or logged:
            progress.read_losses(ctx.run_dir)
            rate = progress.images_log / max(now - progress.t_log, 1e-9)  # training only: measured before monitoring
            values = {"loss": progress.loss, "lr": lr, "img_per_s": rate, **monitored, **progress.resumed}
            if engine.fp16:
                values["amp_skipped"] = engine.amp_skipped
            if progress.preempted:
                values["preempted"] = True
            writer.log(progress.step, values)
            progress.t_log, progress.images_log, progress.resumed = time.perf_counter(), 0, {}
        else:
            writer.advance(progress.step)
    progress.read_losses(ctx.run_dir)  # before the segment's checkpoint


def _save(ctx: StageContext, task: Task, model, optimizer, step: int, skipped: int, export: bool) -> None:
    """Checkpoint (rank 0 writes; every rank waits so none runs ahead of a checkpoint that may be needed).

    The fault tests wrap this function (``tests/faults/slow_runner.py``): keep its signature."""
    engine = ctx.engine
    # Collectives under ZeRO (each rank holds a slice of the masters and the optimizer state): every rank calls them.
    model_state, optimizer_state = engine.model_state(model), engine.optimizer_state(optimizer)
    exported = None
    if export:
        with engine.full_precision(model):  # the export from the fp32 masters, not DeepSpeed's bf16 copies
            exported = task.export(model) if engine.is_main else None
    if engine.is_main:
        state = {
            "step": step,
            "skipped": skipped,
            "model": model_state,
            "optimizer": optimizer_state,
            "rng": _rng_state(),
            "amp": engine.amp_state(),
        }
        if export:
            state["export"] = exported
        meta = {
            "stage": task.stage,
            "config_hash": ctx.cfg.hash(task.stage),
            "arch": task.arch().to_meta(),
            "world_size": engine.world_size,
        }
        ckpt.save_checkpoint(
            rundir.checkpoints_dir(ctx.run_dir), step, state, meta, keep=ctx.cfg.train.keep_checkpoints
        )
    engine.barrier()
