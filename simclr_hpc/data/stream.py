"""The dataset behind both loaders: one (rank, worker) stream over a split's shards, as a ``webdataset.DataPipeline``.

Training: the split's shards are dealt round-robin to the ``world_size * num_workers`` streams (when there are at least
that many; else every stream draws from all of them); ``ResampledShards(deterministic=True)`` draws this stream's
shards, seeded through its ``worker_seed`` hook with the (seed, rank, worker, segment, num_workers, split) seed
(webdataset folds it with its epoch, always 0 here because each loader is iterated once, into a 31-bit seed);
``webdataset.shuffle`` with our seeded ``rng`` is the shuffle buffer; ``webdataset.batched`` batches. Evaluation:
``SimpleShardList`` with no seed (no shard shuffle: index order) over the shards that overlap this stream's contiguous
run of samples, then ``batching.finite_batches``. Shards are read by ``shard_reader.ShardReader`` through
``shards.iter_tar_samples`` (webdataset's ``url_opener -> tar_file_expander -> group_by_keys`` with a handler that stops
the shard at the first read error and reports it).

Splitting by rank and worker is ours: webdataset's ``split_by_node``/``split_by_worker`` take the rank from ``RANK``/
``WORLD_SIZE`` or ``torch.distributed``, but the stream must be a pure function of the ``rank``/``world_size``
arguments (the resume contract; tests build rank 1 of 2 in one process); and they deal whole shards, while evaluation
cuts the *samples* into contiguous per-rank runs (exactly once, balanced to within a sample, and a key subset need not
align with shards). So the train shards are dealt before ``ResampledShards`` and the eval samples are picked by
position, both from the arguments.
"""

from __future__ import annotations

import hashlib
import random
from functools import partial
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from simclr_hpc.data.batching import Batcher, finite_batches
from simclr_hpc.data.index import SplitIndex, read_index
from simclr_hpc.data.shard_reader import Shard, ShardReader
from simclr_hpc.data.sources import DataError


def derive_seed(*parts) -> int:
    """A 63-bit seed from ``parts``, identical in every process (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ShardDataset(IterableDataset):
    """One dataset object for both loaders; ``infinite`` selects the training stream (see ``pipeline``'s docstring)."""

    def __init__(self, shards_dir, split, transform, batch_size, seed, rank, world_size, segment, num_workers, keys,
                 label_map, on_error, infinite, shuffle_buffer):
        if on_error not in ("raise", "skip"):
            raise DataError(f"data.on_error {on_error!r}: use raise or skip")
        if batch_size < 1:
            raise DataError(f"batch size per device {batch_size}: must be >= 1")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world size {world_size}")
        index = read_index(shards_dir)
        split_index = index.split(split)
        self.root, self.split = index.root, split
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size, self.segment = rank, world_size, segment
        self.num_workers, self.infinite = max(1, num_workers), infinite
        self.shuffle_buffer = shuffle_buffer
        label_map = None if label_map is None else {int(k): int(v) for k, v in label_map.items()}
        self.wanted_pos = _wanted_positions(split_index, keys, self.root, split)
        if label_map is not None:
            missing = set(np.unique(split_index.labels[self.wanted_pos]).tolist()) - set(label_map)
            if missing:
                raise DataError(f"label_map has no entry for label(s) {sorted(missing)} present in the requested "
                                f"samples of split {split}")
        self.wanted_mask = np.zeros(len(split_index.keys), dtype=bool)
        self.wanted_mask[self.wanted_pos] = True
        self.shards = [
            Shard(info, self.root / info.name, start, stop, int(self.wanted_mask[start:stop].sum()))
            for info, start, stop in split_index.shard_ranges()
        ]
        self.reader = ShardReader(split_index, self.root, split, transform, label_map, on_error)
        self.finish_batch = getattr(transform, "finish_batch", None)  # a batched transform's pixel work, per batch

    def __iter__(self):
        worker = self._worker()
        stream = self._train_stream(worker) if self.infinite else self._eval_stream(worker)
        return stream if get_worker_info() is not None else _one_thread(stream)

    def _worker(self) -> int:
        info = get_worker_info()
        if info is None:
            return 0
        if info.num_workers != self.num_workers:
            raise RuntimeError(f"loader built for {self.num_workers} workers runs with {info.num_workers}")
        return info.id

    def _train_stream(self, worker: int) -> Iterator[dict]:
        stream, n_streams = self.rank * self.num_workers + worker, self.world_size * self.num_workers
        candidates = [s for s in self.shards if s.wanted]
        mine = candidates[stream::n_streams] if len(candidates) >= n_streams else candidates
        by_url = {str(s.path): s for s in mine}
        parts = (self.seed, self.rank, worker, self.segment, self.num_workers, self.split)
        shard_seed = derive_seed("shards", *parts)
        buffer_rng = random.Random(derive_seed("buffer", *parts))
        aug_rng = random.Random(derive_seed("augment", *parts))
        # Never wait for more samples than this stream's shards hold: a 1 % subset must still flow.
        fill = max(1, min(self.shuffle_buffer, sum(s.wanted for s in mine)))
        batcher = Batcher(self.batch_size, self.finish_batch)
        pipeline = wds.DataPipeline(
            # deterministic=True: the draws depend only on worker_seed (ours) and the epoch, not on pid or time.
            wds.ResampledShards([str(s.path) for s in mine], seed=0, worker_seed=lambda: shard_seed,
                                deterministic=True),
            partial(self.reader.samples, by_url=by_url, want=lambda p: self.wanted_mask[p], batcher=batcher,
                    guard=4 * len(mine) + 8),
            wds.shuffle(bufsize=fill, initial=fill, rng=buffer_rng),
            partial(self.reader.decoded, rng=aug_rng, batcher=batcher),
            wds.batched(self.batch_size, collation_fn=batcher.collate, partial=False),
        )
        return iter(pipeline)

    def _eval_stream(self, worker: int) -> Iterator[dict]:
        mine_rank = np.array_split(self.wanted_pos, self.world_size)[self.rank]
        mine = np.array_split(mine_rank, self.num_workers)[worker]
        if len(mine) == 0:
            return iter(())
        mask = np.zeros(len(self.wanted_mask), dtype=bool)
        mask[mine] = True
        overlapping = [s for s in self.shards if s.stop > mine[0] and s.start <= mine[-1]]
        rng = random.Random(derive_seed("eval", self.rank, worker))
        batcher = Batcher(self.batch_size, self.finish_batch)
        nothing_read = (f"{self.root}: split {self.split}: none of the {len(mine)} samples of rank {self.rank} "
                        f"worker {worker} is readable; run `simclr-hpc data verify {self.root}`")
        pipeline = wds.DataPipeline(
            wds.SimpleShardList([str(s.path) for s in overlapping], seed=None),  # seed=None: no shard shuffle
            partial(self.reader.samples, by_url={str(s.path): s for s in overlapping}, want=lambda p: mask[p],
                    batcher=batcher, guard=None),
            partial(self.reader.decoded, rng=rng, batcher=batcher),
            partial(finite_batches, batcher=batcher, nothing_read=nothing_read),
        )
        return iter(pipeline)


def _wanted_positions(split_index: SplitIndex, keys: list[str] | None, root, split: str) -> np.ndarray:
    """Positions in the split's key list of the samples to read: all, or those of ``keys`` (which must all be there)."""
    all_keys = split_index.keys
    if keys is None:
        wanted = np.arange(len(all_keys))
    else:
        keyset = set(keys)
        wanted = np.asarray([i for i, k in enumerate(all_keys) if k in keyset], dtype=np.int64)
        unknown = len(keyset) - len(wanted)
        if unknown:
            example = next(k for k in keyset if k not in set(all_keys))
            raise DataError(f"{root}: {unknown} of the requested keys (e.g. {example!r}) are not in split "
                            f"{split}; the subset was made for other shards; recompute it")
    if len(wanted) == 0:
        raise DataError(f"{root}: split {split} has no samples to read (empty split or empty key subset)")
    return wanted


def _one_thread(stream: Iterator[dict]) -> Iterator[dict]:
    """Run each step of ``stream`` with one intra-op thread, restoring the caller's setting in between.

    With ``num_workers=0`` the augmentations run in the training process, whose thread pool is sized for the model:
    per-image ops of a few thousand elements are then dominated by thread wake-ups (10-100x slower). DataLoader workers
    already run with one thread.
    """
    while True:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            batch = next(stream)
        except StopIteration:
            return
        finally:
            torch.set_num_threads(previous)
        yield batch
