"""Loaders over a shard directory: an infinite, resampled, reproducible training stream and a finite evaluation pass.

Training (``train_loader``): each rank has ``streams_per_rank`` streams. Together, the streams of all ranks read the
shards in one balanced schedule (``schedule.py``: every shard as often as every other, whatever the ratio of shards to
streams); each stream mixes its samples in a shuffle buffer (sized in bytes), augments and batches. Every random
choice comes from generators seeded with (seed, rank, stream, segment), and a stream's place in the schedule is a pure
function of its segment, so the batches of a run step are bitwise identical in any process, with any worker count
that divides the stream count, and whether the loader started at the run's first segment or at a resumed one
(``stream.py`` says how). ``keys`` restricts the stream to a subset (label fraction, class subset); the stream
repeats it as often as needed, so even a handful of samples yields full batches.

Evaluation (``eval_loader``): the split's samples (or ``keys``) in index order are cut into ``world_size`` contiguous
runs, each rank's run into one per worker; every sample is read exactly once across ranks, and a rank reads only the
shards that overlap its run.

Corrupt data (truncated tar, undecodable image, missing label, a sample the index does not list, or one missing that it
does): ``on_error="raise"`` raises DataError naming the shard and key; ``"skip"`` drops the sample(s) and reports how
many in the next batch's ``skipped``. A stream that can read nothing at all raises instead of spinning.

Small evaluation splits are decoded once per process: ``eval_loader`` keeps the batches of deterministic
transforms (``EvalTransform``) in memory, up to ``EVAL_MEMO_BYTES`` in all, keyed by the shard directory's
``index.json`` and the split's shards (``memo.file_stamp``: path, inode, size, mtime), split, subset and batching. A
local worker that runs many linear probes on the same MNIST test split one after another then decodes it once instead
of once per run. A pass stops keeping its batches as soon as they exceed the cap (a pass over ImageNet holds one batch
at a time, not the split). Training streams over PNG shards decode each shard once per process (``shard_reader``).

Where the pieces live: ``stream.ShardDataset`` is one (rank, worker) stream as a ``webdataset.DataPipeline`` (its
docstring says which parts are webdataset's and which are ours, and why); ``shard_reader.ShardReader`` reads one shard
and does the per-shard accounting above; ``batching`` builds the batch dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Literal, Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from simclr_hpc.data.index import INDEX
from simclr_hpc.data.memo import ByteCappedMemo, file_stamp
from simclr_hpc.data.stream import (
    SHUFFLE_BUFFER_BYTES,
    Placement,
    Resampling,
    Selection,
    ShardDataset,
)

EVAL_MEMO_BYTES = 512 * 2**20
"""At most this many bytes of decoded evaluation batches are kept in memory per process (oldest dropped first)."""
_eval_memo = ByteCappedMemo(EVAL_MEMO_BYTES)
PREFETCH_BATCHES = 2
"""Batches each loader worker prepares ahead."""


def train_loader(
    shards_dir: str | Path,
    split: str,
    transform: Callable,
    *,
    batch_per_device: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    streams_per_rank: int | None = None,
    first_segment: int = 0,
    steps_per_segment: int | None = None,
    total_steps: int | None = None,
    keys: Sequence[str] | None = None,
    label_map: Mapping[int, int] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    shuffle_buffer_bytes: int = SHUFFLE_BUFFER_BYTES,
) -> Iterator[dict]:
    """Iterator of batch dicts ``{"views", "y", "keys", "skipped"}`` for training (see the module docstring), from
    run step ``first_segment * steps_per_segment`` to ``total_steps`` (endless when None).

    ``transform(img, rng)`` returns a tuple of views (``SimCLRViews``) or one tensor (``SupervisedAugment``).
    ``streams_per_rank`` defaults to ``max(1, num_workers)``; ``num_workers`` must divide it. Batches are a pure
    function of every argument but ``num_workers``.
    """
    resampling = Resampling(
        seed=seed,
        streams_per_rank=streams_per_rank or max(1, num_workers),
        first_segment=first_segment,
        steps_per_segment=steps_per_segment,
        total_steps=total_steps,
        shuffle_buffer_bytes=shuffle_buffer_bytes,
    )
    dataset = ShardDataset(
        selection=Selection(shards_dir, split, keys, label_map, on_error),
        transform=transform,
        batch_size=batch_per_device,
        placement=Placement(rank, world_size, num_workers),
        resampling=resampling,
    )
    # Pinned (page-locked) batches on a GPU machine: the step's non_blocking copies to the device are then truly
    # asynchronous (from pageable memory they are synchronous: about 154 MB of views per step at 224 px, 128 per GPU).
    return _loader(dataset, num_workers, pin_memory=torch.cuda.is_available())


def eval_loader(
    shards_dir: str | Path,
    split: str,
    transform: Callable,
    *,
    batch_per_device: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    keys: Sequence[str] | None = None,
    label_map: Mapping[int, int] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> Iterator[dict]:
    """Finite iterator of batch dicts over every sample of ``split`` (or ``keys``) exactly once across the ranks.

    A rank may get an empty iterator when there are fewer samples than ranks; the last batch of each worker may be short.
    """
    selection = Selection(shards_dir, split, keys, label_map, on_error)
    placement = Placement(rank, world_size, num_workers)
    memo_key = _memo_key(selection, transform, batch_per_device, placement)
    kept = _eval_memo.get(memo_key) if memo_key is not None else None
    if kept is not None:  # the same pass over unchanged shards: its keys were checked when it was first read
        return iter(kept)
    dataset = ShardDataset(selection=selection, transform=transform, batch_size=batch_per_device, placement=placement)
    loader = _loader(dataset, num_workers)
    return loader if memo_key is None else _remembered(memo_key, loader, dataset.rank_share())


def _memo_key(selection: Selection, transform: Callable, batch_per_device: int, placement: Placement) -> tuple | None:
    """What identifies an evaluation pass (None: not remembered, e.g. a transform with randomness)."""
    transform_key = getattr(transform, "memo_key", None)
    index = Path(selection.shards_dir) / INDEX
    if transform_key is None or selection.on_error != "raise" or not index.is_file():
        return None
    files = tuple(file_stamp(f) for f in sorted(index.parent.glob(f"{selection.split}-*.tar")))
    keys = tuple(selection.keys) if selection.keys is not None else None
    label_map = tuple(sorted(selection.label_map.items())) if selection.label_map is not None else None
    return file_stamp(index), files, selection.split, transform_key, batch_per_device, placement, keys, label_map


def _remembered(memo_key: tuple, batches: Iterator[dict], samples: int) -> Iterator[dict]:
    """Yield ``batches``; once all were read (a pass stopped halfway keeps nothing), keep them for the next pass.

    A pass too large to remember (its first batch times its ``samples`` exceeds the memo's cap, or the batches kept
    come to exceed it) keeps nothing: it holds one batch at a time, whatever the size of the split."""
    kept: list[dict] | None = []
    nbytes = 0
    for batch in batches:
        if kept is not None:
            nbytes += _nbytes(batch)
            projected = nbytes / max(1, len(batch["keys"])) * samples if not kept else nbytes
            if projected <= _eval_memo.cap:
                kept.append(batch)
            else:
                kept = None  # too large to remember: let the batches go as they are used
        yield batch
    if kept is not None:
        _eval_memo.put(memo_key, kept, nbytes)


def _nbytes(batch: dict) -> int:
    return sum(v.numel() * v.element_size() for v in (*batch["views"], batch["y"]))


def _loader(dataset: ShardDataset, num_workers: int, pin_memory: bool = False) -> Iterator[dict]:
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        prefetch_factor=PREFETCH_BATCHES if num_workers else None,
        pin_memory=pin_memory,
    )
    return iter(loader)
