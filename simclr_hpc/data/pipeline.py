"""Loaders over a shard directory: an infinite, resampled, reproducible training stream and a finite evaluation pass.

Training (``train_loader``): each (rank, worker) is one stream. It draws shards with replacement from its own share of
the split (shards are dealt round-robin to the ``world_size * num_workers`` streams when there are at least that many,
else every stream draws from all of them), mixes samples in a shuffle buffer, augments and batches. Every random choice
(shard draws, buffer order, augmentation) comes from generators seeded with (seed, rank, worker, segment), so the same
(seed, rank, segment, num_workers) gives bitwise identical batches in any process: the training loop re-creates the
loader at each checkpoint with ``segment`` = checkpoint index, and a resumed run sees exactly the data an uninterrupted
one saw. ``keys`` restricts the stream to a subset (label fraction, class subset); the stream repeats it as often as
needed, so even a handful of samples yields full batches.

Evaluation (``eval_loader``): the split's samples (or ``keys``) in index order are cut into ``world_size`` contiguous
runs, each rank's run into one per worker; every sample is read exactly once across ranks, and a rank reads only the
shards that overlap its run.

Corrupt data (truncated tar, undecodable image, missing label, a sample the index does not list, or one missing that it
does): ``on_error="raise"`` raises DataError naming the shard and key; ``"skip"`` drops the sample(s) and reports how
many in the next batch's ``skipped``. A stream that can read nothing at all raises instead of spinning.

Where the pieces live: ``stream.ShardDataset`` is one (rank, worker) stream as a ``webdataset.DataPipeline`` (its
docstring says which parts are webdataset's and which are ours, and why); ``shard_reader.ShardReader`` reads one shard
and does the per-shard accounting above; ``batching`` builds the batch dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from torch.utils.data import DataLoader

from simclr_hpc.data.stream import ShardDataset

SHUFFLE_BUFFER = 2000


def train_loader(shards_dir: str | Path, split: str, transform, batch_per_device: int, seed: int, rank: int = 0,
                 world_size: int = 1, segment: int = 0, num_workers: int = 0, keys: list[str] | None = None,
                 label_map: dict[int, int] | None = None, on_error: str = "raise",
                 shuffle_buffer: int = SHUFFLE_BUFFER) -> Iterator[dict]:
    """Infinite iterator of batch dicts ``{"views", "y", "keys", "skipped"}`` for training (see the module docstring).

    ``transform(img, rng)`` returns a tuple of views (``SimCLRViews``) or one tensor (``SupervisedAugment``). Batches
    are a pure function of (shards, split, transform, batch_per_device, seed, rank, world_size, segment, num_workers,
    keys, label_map): re-create the loader with the next ``segment`` at each checkpoint.
    """
    dataset = ShardDataset(shards_dir, split, transform, batch_per_device, seed, rank, world_size, segment,
                           num_workers, keys, label_map, on_error, True, shuffle_buffer)
    return _loader(dataset, num_workers)


def eval_loader(shards_dir: str | Path, split: str, transform, batch_per_device: int, rank: int = 0,
                world_size: int = 1, keys: list[str] | None = None, label_map: dict[int, int] | None = None,
                on_error: str = "raise", num_workers: int = 0) -> Iterator[dict]:
    """Finite iterator of batch dicts over every sample of ``split`` (or ``keys``) exactly once across the ranks.

    A rank may get an empty iterator when there are fewer samples than ranks; the last batch of each worker may be short.
    """
    dataset = ShardDataset(shards_dir, split, transform, batch_per_device, 0, rank, world_size, 0, num_workers,
                           keys, label_map, on_error, False, SHUFFLE_BUFFER)
    return _loader(dataset, num_workers)


def _loader(dataset: ShardDataset, num_workers: int) -> Iterator[dict]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, prefetch_factor=2 if num_workers else None,
                        persistent_workers=False)
    return iter(loader)
