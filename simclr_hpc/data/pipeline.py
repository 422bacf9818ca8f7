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

Both loaders are ``webdataset.DataPipeline`` s. Training: ``ResampledShards(deterministic=True)`` draws this stream's
shards, seeded through its ``worker_seed`` hook with the (seed, rank, worker, segment, num_workers, split) seed
(webdataset folds it with its epoch, always 0 here because each loader is iterated once, into a 31-bit seed);
``webdataset.shuffle`` with our seeded ``rng`` is the shuffle buffer; ``webdataset.batched`` batches. Evaluation:
``SimpleShardList`` with no seed (no shard shuffle: index order). Shards are read by ``shards.iter_tar_samples``, which
is webdataset's ``url_opener -> tar_file_expander -> group_by_keys`` with a handler that stops the shard at the first
read error and reports it (TruncatedShard -> DataError naming the shard and the last whole key, or a count with skip).

What stays ours, and why:
- Splitting by rank and worker. webdataset's ``split_by_node``/``split_by_worker`` take the rank from ``RANK``/
  ``WORLD_SIZE`` or ``torch.distributed``, but the stream must be a pure function of the ``rank``/``world_size``
  arguments (the resume contract; tests build rank 1 of 2 in one process); and they deal whole shards, while
  evaluation cuts the *samples* into contiguous per-rank runs (exactly once, balanced to within a sample, and a key
  subset need not align with shards). So the train shards are dealt before ``ResampledShards`` and the eval samples are
  picked by position, both from the arguments.
- Per-shard accounting (keys the index lists but the shard lacks, labels that differ from the index, the
  no-readable-samples guard): webdataset's handler sees exceptions, not missing or mislabelled samples.
- Decoding: lazily at reduced size in ``augment.open_image`` (webdataset's decoders decode every image at full size).
- The eval batcher: ``webdataset.batched`` would drop samples skipped after the last batch from ``skipped``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from simclr_hpc.data.augment import open_image
from simclr_hpc.data.index import ShardInfo, read_index
from simclr_hpc.data.shards import IMAGE_EXTS, TruncatedShard, iter_tar_samples
from simclr_hpc.data.sources import DataError

SHUFFLE_BUFFER = 2000
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)  # what PIL raises for corrupt or truncated image data


def derive_seed(*parts) -> int:
    """A 63-bit seed from ``parts``, identical in every process (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class _Shard:
    info: ShardInfo
    path: Path
    start: int  # position of the shard's first sample in the split's key list
    stop: int
    wanted: int  # how many of its samples the loader uses (all, or those in ``keys``)


class _Batcher:
    """Collects transformed samples into batch dicts and carries the count of dropped samples into the next batch."""

    def __init__(self, batch_size: int):
        self.batch_size, self.items, self.skipped = batch_size, [], 0

    def add(self, views: tuple[torch.Tensor, ...], label: int, key: str) -> dict | None:
        self.items.append((views, label, key))
        return self.flush() if len(self.items) == self.batch_size else None

    def flush(self) -> dict | None:
        if not self.items:
            return None
        batch = self.collate(self.items)
        self.items = []
        return batch

    def collate(self, items: list) -> dict:
        """One batch dict from ``(views, label, key)`` items; takes the skipped count gathered since the last batch."""
        n_views = len(items[0][0])
        batch = {
            "views": tuple(torch.stack([item[0][v] for item in items]) for v in range(n_views)),
            "y": torch.tensor([item[1] for item in items], dtype=torch.long),
            "keys": [item[2] for item in items],
            "skipped": self.skipped,
        }
        self.skipped = 0
        return batch


class _ShardDataset(IterableDataset):
    """One dataset object for both loaders; ``infinite`` selects the training stream (see the module docstring)."""

    def __init__(self, shards_dir, split, transform, batch_size, seed, rank, world_size, segment, num_workers, keys,
                 label_map, on_error, infinite, shuffle_buffer):
        if on_error not in ("raise", "skip"):
            raise DataError(f"data.on_error {on_error!r}: use raise or skip")
        if batch_size < 1:
            raise DataError(f"batch size per device {batch_size}: must be >= 1")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world size {world_size}")
        index = read_index(shards_dir)
        self.split_index = index.split(split)
        self.root, self.split, self.num_classes = index.root, split, index.num_classes
        self.transform, self.batch_size, self.seed = transform, batch_size, seed
        self.rank, self.world_size, self.segment = rank, world_size, segment
        self.num_workers, self.on_error, self.infinite = max(1, num_workers), on_error, infinite
        self.label_map = None if label_map is None else {int(k): int(v) for k, v in label_map.items()}
        self.shuffle_buffer = shuffle_buffer
        all_keys = self.split_index.keys
        if keys is None:
            self.wanted_pos = np.arange(len(all_keys))
        else:
            keyset = set(keys)
            self.wanted_pos = np.asarray([i for i, k in enumerate(all_keys) if k in keyset], dtype=np.int64)
            unknown = len(keyset) - len(self.wanted_pos)
            if unknown:
                example = next(k for k in keyset if k not in set(all_keys))
                raise DataError(f"{self.root}: {unknown} of the requested keys (e.g. {example!r}) are not in split "
                                f"{split}; the subset was made for other shards; recompute it")
        if len(self.wanted_pos) == 0:
            raise DataError(f"{self.root}: split {split} has no samples to read (empty split or empty key subset)")
        if self.label_map is not None:
            missing = set(np.unique(self.split_index.labels[self.wanted_pos]).tolist()) - set(self.label_map)
            if missing:
                raise DataError(f"label_map has no entry for label(s) {sorted(missing)} present in the requested "
                                f"samples of split {split}")
        wanted_mask = np.zeros(len(all_keys), dtype=bool)
        wanted_mask[self.wanted_pos] = True
        self.shards = [
            _Shard(info, self.root / info.name, start, stop, int(wanted_mask[start:stop].sum()))
            for info, start, stop in self.split_index.shard_ranges()
        ]
        self.wanted_mask = wanted_mask

    def _worker(self) -> int:
        info = get_worker_info()
        if info is None:
            return 0
        if info.num_workers != self.num_workers:
            raise RuntimeError(f"loader built for {self.num_workers} workers runs with {info.num_workers}")
        return info.id

    def _problem(self, shard: _Shard, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(f"{shard.path}: {message}; run `simclr-hpc data verify {self.root}` "
                            f"(or set data.on_error=skip to drop corrupt samples)")

    def _read(self, shard: _Shard, want: Callable[[int], bool], batcher: _Batcher) -> Iterator[tuple[str, int, dict]]:
        """``(key, label, parts)`` of the wanted, sound samples of one shard, in file order; problems raise or count."""
        shard_keys = self.split_index.keys[shard.start:shard.stop]
        expected = {k: p for p, k in enumerate(shard_keys, start=shard.start) if want(p)}
        listed = set(shard_keys)
        seen: set[str] = set()
        try:
            for key, parts in iter_tar_samples(shard.path):
                pos = expected.get(key)
                if pos is None:
                    if key not in listed:
                        self._problem(shard, f"key {key} is not listed in index.json for this shard")
                    continue
                seen.add(key)
                label = _label(parts)
                ext = next((e for e in IMAGE_EXTS if e in parts), None)
                if label is None or ext is None or label != int(self.split_index.labels[pos]):
                    what = ("missing image" if ext is None else "missing or unreadable label" if label is None
                            else f"label {label} differs from index.json ({int(self.split_index.labels[pos])})")
                    self._problem(shard, f"key {key}: {what}")
                    batcher.skipped += 1
                    continue
                yield key, label, parts
        except FileNotFoundError:
            self._problem(shard, "shard file missing")
        except TruncatedShard as exc:
            where = f"after key {exc.after}" if exc.after else "at its start"
            self._problem(shard, f"truncated or corrupt tar {where} ({exc})")
        lost = len(expected) - len(seen)
        if lost:
            if self.on_error == "raise":
                missing = next(k for k in expected if k not in seen)
                self._problem(shard, f"key {missing}: listed in index.json but not in the shard ({lost} missing)")
            batcher.skipped += lost

    def _sample(self, shard: _Shard, key: str, label: int, parts: dict, rng: random.Random, batcher: _Batcher):
        """Decode and transform one sample; returns (views, y) or None when it is corrupt and skipped."""
        ext = next(e for e in IMAGE_EXTS if e in parts)
        try:
            img = open_image(parts[ext])
            if ext == "png":
                img.load()
            out = self.transform(img, rng)
        except DECODE_ERRORS as exc:
            self._problem(shard, f"key {key}: undecodable image ({type(exc).__name__}: {exc})")
            batcher.skipped += 1
            return None
        views = out if isinstance(out, tuple) else (out,)
        return views, self.label_map[label] if self.label_map is not None else label

    def __iter__(self):
        worker = self._worker()
        stream = self._train_stream(worker) if self.infinite else self._eval_stream(worker)
        return stream if get_worker_info() is not None else _one_thread(stream)

    def _shard_samples(self, urls: Iterator[dict], by_url: dict[str, _Shard], want: Callable[[int], bool],
                       batcher: _Batcher, guard: int | None) -> Iterator[tuple]:
        """Pipeline stage: shard URLs -> ``(shard, key, label, parts)`` of their wanted, sound samples.

        ``guard``: raise after that many consecutive shard reads gave nothing usable (an infinite stream over broken
        shards must not spin); None for a finite pass.
        """
        barren = 0
        for item in urls:
            shard = by_url[item["url"]]
            got = 0
            for key, label, raw in self._read(shard, want, batcher):
                got += 1
                yield shard, key, label, raw
            barren = 0 if got else barren + 1
            if guard is not None and barren > guard:
                raise DataError(f"{self.root}: split {self.split}: no readable samples in {len(by_url)} shard(s) "
                                f"after {barren} reads; run `simclr-hpc data verify {self.root}`")

    def _decoded(self, samples: Iterator[tuple], rng: random.Random, batcher: _Batcher) -> Iterator[tuple]:
        """Pipeline stage: ``(shard, key, label, parts)`` -> ``(views, y, key)``; bad images raise or are counted."""
        for shard, key, label, raw in samples:
            sample = self._sample(shard, key, label, raw, rng, batcher)
            if sample is not None:
                yield sample[0], sample[1], key

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
        batcher = _Batcher(self.batch_size)
        pipeline = wds.DataPipeline(
            # deterministic=True: the draws depend only on worker_seed (ours) and the epoch, not on pid or time.
            wds.ResampledShards([str(s.path) for s in mine], seed=0, worker_seed=lambda: shard_seed,
                                deterministic=True),
            partial(self._shard_samples, by_url=by_url, want=lambda p: self.wanted_mask[p], batcher=batcher,
                    guard=4 * len(mine) + 8),
            wds.shuffle(bufsize=fill, initial=fill, rng=buffer_rng),
            partial(self._decoded, rng=aug_rng, batcher=batcher),
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
        batcher = _Batcher(self.batch_size)
        pipeline = wds.DataPipeline(
            wds.SimpleShardList([str(s.path) for s in overlapping], seed=None),  # seed=None: no shard shuffle
            partial(self._shard_samples, by_url={str(s.path): s for s in overlapping}, want=lambda p: mask[p],
                    batcher=batcher, guard=None),
            partial(self._decoded, rng=rng, batcher=batcher),
            partial(self._eval_batches, batcher=batcher, worker=worker, n_samples=len(mine)),
        )
        return iter(pipeline)

    def _eval_batches(self, samples: Iterator[tuple], batcher: _Batcher, worker: int,
                      n_samples: int) -> Iterator[dict]:
        """Pipeline stage: batches of a finite pass; samples skipped after the last full batch still reach a batch."""
        # One batch is held back so that samples skipped after the last full batch are still reported on a batch.
        pending = None
        for views, y, key in samples:
            batch = batcher.add(views, y, key)
            if batch is not None:
                if pending is not None:
                    yield pending
                pending = batch
        last = batcher.flush()
        if pending is None and last is None:
            raise DataError(f"{self.root}: split {self.split}: none of the {n_samples} samples of rank {self.rank} "
                            f"worker {worker} is readable; run `simclr-hpc data verify {self.root}`")
        if last is None:
            pending["skipped"] += batcher.skipped
        for batch in (pending, last):
            if batch is not None:
                yield batch


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


def _label(parts: dict) -> int | None:
    try:
        return int(parts["cls"].decode().strip())
    except (KeyError, UnicodeDecodeError, ValueError):
        return None


def _loader(dataset: _ShardDataset, num_workers: int) -> Iterator[dict]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, prefetch_factor=2 if num_workers else None,
                        persistent_workers=False)
    return iter(loader)


def train_loader(shards_dir: str | Path, split: str, transform, batch_per_device: int, seed: int, rank: int = 0,
                 world_size: int = 1, segment: int = 0, num_workers: int = 0, keys: list[str] | None = None,
                 label_map: dict[int, int] | None = None, on_error: str = "raise",
                 shuffle_buffer: int = SHUFFLE_BUFFER) -> Iterator[dict]:
    """Infinite iterator of batch dicts ``{"views", "y", "keys", "skipped"}`` for training (see the module docstring).

    ``transform(img, rng)`` returns a tuple of views (``SimCLRViews``) or one tensor (``SupervisedAugment``). Batches
    are a pure function of (shards, split, transform, batch_per_device, seed, rank, world_size, segment, num_workers,
    keys, label_map): re-create the loader with the next ``segment`` at each checkpoint.
    """
    dataset = _ShardDataset(shards_dir, split, transform, batch_per_device, seed, rank, world_size, segment,
                            num_workers, keys, label_map, on_error, True, shuffle_buffer)
    return _loader(dataset, num_workers)


def eval_loader(shards_dir: str | Path, split: str, transform, batch_per_device: int, rank: int = 0,
                world_size: int = 1, keys: list[str] | None = None, label_map: dict[int, int] | None = None,
                on_error: str = "raise", num_workers: int = 0) -> Iterator[dict]:
    """Finite iterator of batch dicts over every sample of ``split`` (or ``keys``) exactly once across the ranks.

    A rank may get an empty iterator when there are fewer samples than ranks; the last batch of each worker may be short.
    """
    dataset = _ShardDataset(shards_dir, split, transform, batch_per_device, 0, rank, world_size, 0, num_workers,
                            keys, label_map, on_error, False, SHUFFLE_BUFFER)
    return _loader(dataset, num_workers)
