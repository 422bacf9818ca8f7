"""The dataset behind both loaders: one rank's streams over a split's shards, as ``webdataset.DataPipeline``\\ s.

What a loader reads is a :class:`Selection` (split, key subset, label map, error policy), who reads it a
:class:`Placement` (rank, world size, loader workers), and a training stream adds its :class:`Resampling` (seed,
streams per rank, segments, shuffle buffer in bytes).

Training: rank ``r`` has ``S`` = ``streams_per_rank`` streams; the batch of run step ``t`` is, with segment ``j = t //
C`` (``C`` = ``steps_per_segment``) and ``i = t % C``, the ``i // S``-th batch of stream ``u = i % S`` of segment
``j``. A stream of a segment is a pure function of (seed, rank, u, j, S, split): its shard draws come from the run's
balanced ``schedule.ShardSchedule`` from candidate position ``j * (its batches in a segment * batch + buffer)`` on, its
shuffle buffer (``webdataset.shuffle``) and its augmentations from generators seeded with those numbers. The loader's
``W`` worker processes (``W`` divides ``S``; 0 = in this process) serve the steps round-robin from the loader's first
step, and each runs whichever streams its steps belong to. So the batches are the same whatever ``W``, whether one
loader serves the whole run or one is built per segment, and wherever a run resumed: the resume contract.

Evaluation: the split's wanted samples in index order are cut into ``world_size`` contiguous runs, each rank's run
into one per worker; each worker reads the shards that overlap its run in index order (no shuffle), then
``batching.finite_batches``. Shards are read by ``shard_reader.ShardReader`` through ``shards.iter_tar_samples``
(webdataset's ``url_opener -> tar_file_expander -> group_by_keys``, stopping a shard at its first read error).

Splitting by rank and worker is ours: webdataset's ``split_by_node``/``split_by_worker`` take the rank from the
environment or ``torch.distributed``, but a stream must be a pure function of its arguments (tests build rank 1 of 2
in one process), and evaluation cuts *samples*, not shards, into per-rank runs.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from simclr_hpc.data.batching import Batcher, finite_batches
from simclr_hpc.data.index import SplitIndex, read_index
from simclr_hpc.data.schedule import ShardSchedule
from simclr_hpc.data.shard_reader import Shard, ShardReader
from simclr_hpc.data.sources import DataError

SHUFFLE_BUFFER_BYTES = 256 * 2**20
"""Default shuffle-buffer memory of one rank's training streams together (encoded samples, as read from the tars)."""


def derive_seed(*parts) -> int:
    """A 63-bit seed from ``parts``, identical in every process (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class Selection:
    """Which samples a loader reads, and what it does with a corrupt one."""

    shards_dir: str | Path
    split: str
    keys: Sequence[str] | None = None
    """Only these sample keys (None: the whole split)."""
    label_map: Mapping[int, int] | None = None
    """Original label -> label the batches carry (None: unchanged)."""
    on_error: Literal["raise", "skip"] = "raise"


@dataclass(frozen=True)
class Placement:
    """Who reads: this process's rank among ``world_size``, with ``num_workers`` loader processes (0: itself)."""

    rank: int = 0
    world_size: int = 1
    num_workers: int = 0


@dataclass(frozen=True)
class Resampling:
    """How a training stream resamples its selection (see the module docstring)."""

    seed: int
    streams_per_rank: int = 1
    """Streams of each rank (``S``); the loader's worker count must divide it. Part of what the batches depend on."""
    first_segment: int = 0
    """Segment of the loader's first batch (a resumed run starts at its checkpoint's segment)."""
    steps_per_segment: int | None = None
    """Steps per segment (``train.ckpt_every_steps``); None: the whole stream is one segment."""
    total_steps: int | None = None
    """The loader ends after this run step (None: endless)."""
    shuffle_buffer_bytes: int = SHUFFLE_BUFFER_BYTES


class ShardDataset(IterableDataset):
    """One rank's batches: a training stream when ``resampling`` is given, else one evaluation pass."""

    def __init__(
        self,
        *,
        selection: Selection,
        transform: Callable,
        batch_size: int,
        placement: Placement,
        resampling: Resampling | None = None,
    ):
        if selection.on_error not in ("raise", "skip"):
            raise DataError(f"data.on_error {selection.on_error!r}: use raise or skip")
        if batch_size < 1:
            raise DataError(f"batch size per device {batch_size}: must be >= 1")
        if not 0 <= placement.rank < placement.world_size:
            raise DataError(f"rank {placement.rank} is outside world size {placement.world_size}")
        index = read_index(selection.shards_dir)
        split_index = index.split(selection.split)
        self.root, self.split, self.batch_size = index.root, selection.split, batch_size
        self.placement, self.resampling = placement, resampling
        label_map = None if selection.label_map is None else {int(k): int(v) for k, v in selection.label_map.items()}
        self.wanted_pos = _wanted_positions(split_index, selection.keys, self.root, self.split)
        if label_map is not None:
            missing = set(np.unique(split_index.labels[self.wanted_pos]).tolist()) - set(label_map)
            if missing:
                raise DataError(
                    f"label_map has no entry for label(s) {sorted(missing)} present in the requested "
                    f"samples of split {self.split}"
                )
        self.wanted_mask = np.zeros(len(split_index.keys), dtype=bool)
        self.wanted_mask[self.wanted_pos] = True
        self.shards = [
            Shard(info, self.root / info.name, start, stop, int(self.wanted_mask[start:stop].sum()))
            for info, start, stop in split_index.shard_ranges()
        ]
        self.reader = ShardReader(split_index, self.root, self.split, transform, label_map, selection.on_error)
        self.finish_batch = getattr(transform, "finish_batch", None)  # a batched transform's pixel work, per batch
        self.collate_views = getattr(transform, "collate_views", None)
        if resampling is not None:
            self._plan_training(resampling)

    def _plan_training(self, r: Resampling) -> None:
        streams, workers = r.streams_per_rank, self.placement.num_workers
        if streams < 1 or (workers and streams % workers):
            raise DataError(
                f"{workers} loader workers cannot serve {streams} streams per rank: the worker count "
                f"must divide the stream count"
            )
        if r.steps_per_segment is not None and r.steps_per_segment < 1:
            raise DataError(f"steps per segment {r.steps_per_segment}: must be >= 1")
        self.candidates = [s for s in self.shards if s.wanted]
        self.schedule = ShardSchedule(
            [s.wanted for s in self.candidates],
            self.placement.world_size * streams,
            derive_seed("schedule", r.seed, self.split),
        )
        wanted_bytes = sum(_shard_bytes(s) * s.wanted / max(1, s.stop - s.start) for s in self.candidates)
        per_sample = max(1.0, wanted_bytes / max(1, len(self.wanted_pos)))
        # Never wait for more samples than the selection holds: a 1 % subset must still flow.
        self.buffer = int(max(1, min(r.shuffle_buffer_bytes / streams / per_sample, len(self.wanted_pos))))

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None and info.num_workers != self.placement.num_workers:
            raise RuntimeError(f"loader built for {self.placement.num_workers} workers runs with {info.num_workers}")
        if self.resampling is None:
            stream = self._eval_stream(worker)
        else:
            stream = self._train_stream(worker, workers)
        return stream if info is not None else _one_thread(stream)

    def segment_candidates(self, stream: int) -> int:
        """Candidates stream ``stream`` of a full segment reads (see :func:`segment_candidates`)."""
        r = self.resampling
        batches = len(range(stream, r.steps_per_segment, r.streams_per_rank)) if r.steps_per_segment else 0
        return segment_candidates(batches, self.batch_size, self.buffer)

    def _train_stream(self, worker: int, workers: int) -> Iterator[dict]:
        """This worker's batches: run steps ``first, first + workers, ...`` from the loader's first step on."""
        r = self.resampling
        per_segment = r.steps_per_segment
        step = (r.first_segment * per_segment if per_segment else 0) + worker
        running: dict[tuple[int, int], Iterator[dict]] = {}
        while r.total_steps is None or step < r.total_steps:
            segment, i = divmod(step, per_segment) if per_segment else (r.first_segment, step)
            key = (segment, i % r.streams_per_rank)
            if key not in running:
                for old in [k for k in running if k[0] < segment]:
                    del running[old]  # a finished segment's streams (and their buffers) go
                running[key] = self._segment_stream(*key)
            yield next(running[key])
            step += workers

    def _segment_stream(self, segment: int, stream: int) -> Iterator[dict]:
        r, p = self.resampling, self.placement
        parts = (r.seed, p.rank, stream, segment, r.streams_per_rank, self.split)
        position = segment * self.segment_candidates(stream) if r.steps_per_segment else 0
        draws = self.schedule.draws_from(p.rank * r.streams_per_rank + stream, position)
        batcher = Batcher(self.batch_size, self.finish_batch, self.collate_views)
        pipeline = wds.DataPipeline(
            lambda: ({"shard": self.candidates[s], "skip": skip} for s, skip in draws),
            partial(
                self.reader.samples,
                want=lambda pos: self.wanted_mask[pos],
                batcher=batcher,
                guard=4 * len(self.candidates) + 8,
            ),
            wds.shuffle(bufsize=self.buffer, initial=self.buffer, rng=random.Random(derive_seed("buffer", *parts))),
            partial(self.reader.decoded, rng=random.Random(derive_seed("augment", *parts)), batcher=batcher),
            wds.batched(self.batch_size, collation_fn=batcher.collate, partial=False),
        )
        return iter(pipeline)

    def rank_share(self) -> int:
        """Samples of this rank's evaluation pass."""
        return len(np.array_split(self.wanted_pos, self.placement.world_size)[self.placement.rank])

    def _eval_stream(self, worker: int) -> Iterator[dict]:
        p = self.placement
        mine_rank = np.array_split(self.wanted_pos, p.world_size)[p.rank]
        mine = np.array_split(mine_rank, max(1, p.num_workers))[worker]
        if len(mine) == 0:
            return iter(())
        mask = np.zeros(len(self.wanted_mask), dtype=bool)
        mask[mine] = True
        overlapping = [s for s in self.shards if s.stop > mine[0] and s.start <= mine[-1]]
        rng = random.Random(derive_seed("eval", p.rank, worker))
        batcher = Batcher(self.batch_size, self.finish_batch, self.collate_views)
        nothing_read = (
            f"{self.root}: split {self.split}: none of the {len(mine)} samples of rank {p.rank} "
            f"worker {worker} is readable; run `simclr-hpc data verify {self.root}`"
        )
        pipeline = wds.DataPipeline(
            lambda: ({"shard": s, "skip": 0} for s in overlapping),  # index order: no shard shuffle
            partial(self.reader.samples, want=lambda pos: mask[pos], batcher=batcher, guard=None),
            partial(self.reader.decoded, rng=rng, batcher=batcher),
            partial(finite_batches, batcher=batcher, nothing_read=nothing_read),
        )
        return iter(pipeline)


def _shard_bytes(shard: Shard) -> int:
    """A shard's size: from index.json, else from the file (0 when it is missing: reading it reports that)."""
    if shard.info.bytes is not None:
        return shard.info.bytes
    return shard.path.stat().st_size if shard.path.exists() else 0


def segment_candidates(batches: int, batch_size: int, buffer: int) -> int:
    """Candidates a stream reads to yield ``batches`` batches through a shuffle buffer of ``buffer`` samples: the
    buffer yields its first sample once full, then reads one sample per sample it yields (a corrupt sample skipped
    makes it read one more, which the next segment reads again: a negligible overlap)."""
    return batches * batch_size + buffer - 1 if batches else 0


def _wanted_positions(split_index: SplitIndex, keys: Sequence[str] | None, root, split: str) -> np.ndarray:
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
            raise DataError(
                f"{root}: {unknown} of the requested keys (e.g. {example!r}) are not in split "
                f"{split}; the subset was made for other shards; recompute it"
            )
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
