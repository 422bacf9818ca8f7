"""The data wiring every stage shares: the arguments of its training stream, derived from the config and the context."""

from __future__ import annotations

from simclr_hpc.train.task import StageContext


def train_stream(ctx: StageContext, first_segment: int) -> dict:
    """Keyword arguments of ``pipeline.train_loader`` for this rank, from run step ``first_segment *
    train.ckpt_every_steps`` to the end of the run: one loader serves every segment after it (see ``loop.py``)."""
    cfg, engine = ctx.cfg, ctx.engine
    return {
        "batch_per_device": ctx.per_device,
        "seed": cfg.run.seed,
        "rank": engine.rank,
        "world_size": engine.world_size,
        "num_workers": cfg.data.num_workers,
        "streams_per_rank": max(1, cfg.data.num_workers),
        "first_segment": first_segment,
        "steps_per_segment": cfg.train.ckpt_every_steps,
        "total_steps": cfg.train.steps,
        "on_error": cfg.data.on_error,
    }
