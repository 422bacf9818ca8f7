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

Small evaluation splits are decoded once per process: ``eval_loader`` keeps the batches of deterministic
transforms (``EvalTransform``) in memory, up to ``EVAL_MEMO_BYTES`` in all, keyed by the shard directory's
``index.json`` and the split's shards (``memo.file_stamp``: path, inode, size, mtime), split, subset and batching. A
local worker that runs many linear probes on the same MNIST test split one after another then decodes it once instead
of once per run. Training streams over PNG shards decode each shard once per process (``shard_reader``).

Where the pieces live: ``stream.ShardDataset`` is one (rank, worker) stream as a ``webdataset.DataPipeline`` (its
docstring says which parts are webdataset's and which are ours, and why); ``shard_reader.ShardReader`` reads one shard
and does the per-shard accounting above; ``batching`` builds the batch dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from torch.utils.data import DataLoader

from simclr_hpc.data.index import INDEX
from simclr_hpc.data.memo import ByteCappedMemo, file_stamp
from simclr_hpc.data.stream import ShardDataset

SHUFFLE_BUFFER = 2000
EVAL_MEMO_BYTES = 512 * 2**20
"""At most this many bytes of decoded evaluation batches are kept in memory per process (oldest dropped first)."""
_eval_memo = ByteCappedMemo(EVAL_MEMO_BYTES)


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
    memo_key = _memo_key(shards_dir, split, transform, batch_per_device, rank, world_size, keys, label_map, on_error)
    kept = _eval_memo.get(memo_key) if memo_key is not None else None
    if kept is not None:  # the same pass over unchanged shards: its keys were checked when it was first read
        return iter(kept)
    dataset = ShardDataset(shards_dir, split, transform, batch_per_device, 0, rank, world_size, 0, num_workers,
                           keys, label_map, on_error, False, SHUFFLE_BUFFER)
    loader = _loader(dataset, num_workers)
    return loader if memo_key is None else _remembered(memo_key, loader)


def _memo_key(shards_dir, split, transform, batch_per_device, rank, world_size, keys, label_map, on_error):
    """What identifies an evaluation pass (None: not remembered, e.g. a transform with randomness)."""
    transform_key = getattr(transform, "memo_key", None)
    index = Path(shards_dir) / INDEX
    if transform_key is None or on_error != "raise" or not index.is_file():
        return None
    files = tuple(file_stamp(f) for f in sorted(index.parent.glob(f"{split}-*.tar")))
    return (file_stamp(index), files, split, transform_key, batch_per_device, rank, world_size,
            tuple(keys) if keys is not None else None,
            tuple(sorted(label_map.items())) if label_map is not None else None)


def _remembered(memo_key: tuple, batches: Iterator[dict]) -> Iterator[dict]:
    """Yield ``batches``; once all were read (a pass stopped halfway keeps nothing), keep them for the next pass."""
    kept = []
    for batch in batches:
        kept.append(batch)
        yield batch
    _eval_memo.put(memo_key, kept, _nbytes(kept))


def _nbytes(batches: list[dict]) -> int:
    return sum(v.numel() * v.element_size() for b in batches for v in (*b["views"], b["y"]))


def _loader(dataset: ShardDataset, num_workers: int) -> Iterator[dict]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, prefetch_factor=2 if num_workers else None,
                        persistent_workers=False)
    return iter(loader)
