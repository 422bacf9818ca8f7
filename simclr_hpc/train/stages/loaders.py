"""The data wiring every stage shares: the arguments of its training stream, derived from the config and the context."""

from __future__ import annotations

from simclr_hpc.data.workers import fit_workers
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
        "num_workers": fit_workers(cfg.data.num_workers),
        "streams_per_rank": max(1, cfg.data.num_workers),
        "first_segment": first_segment,
        "steps_per_segment": cfg.train.ckpt_every_steps,
        "total_steps": cfg.train.steps,
        "on_error": cfg.data.on_error,
        "shuffle_buffer_bytes": int(cfg.data.shuffle_buffer_mb * 2**20),
    }


def labelled_source(ctx: StageContext, keys: list[str]) -> tuple[str, str, list[str] | None]:
    """``(shards directory, split, keys)`` to read the labelled training subset ``keys`` from: its own small shard
    set (``data.subset_shards``, built once by rank 0, then found by every rank and later run) when it is under half
    of the training split, else the dataset's shards with the key filter. A collective: every rank calls it."""
    from simclr_hpc import distributed as D
    from simclr_hpc.data import subset_shards
    from simclr_hpc.data.index import read_index

    cfg = ctx.cfg
    total = len(read_index(cfg.data.shards).split(cfg.data.train_split).keys)
    if len(keys) >= subset_shards.WORTH_IT * total:
        return cfg.data.shards, cfg.data.train_split, keys
    fallback = f"{cfg.run.root}"
    if ctx.engine.is_main:
        subset_shards.materialise(cfg.data.shards, cfg.data.train_split, keys, fallback)
    D.barrier()
    return str(subset_shards.materialise(cfg.data.shards, cfg.data.train_split, keys, fallback)), "train", None
