"""One shard's samples checked against ``index.json``, decoded and transformed; every problem raises or is counted.

Per-shard accounting is ours because webdataset's error handler sees exceptions, not missing or mislabelled samples:
keys the shard has but the index does not list, keys the index lists but the shard lacks, labels that differ from the
index, undecodable images, and the guard that stops an infinite stream over shards with nothing readable. With
``on_error="raise"`` each raises DataError naming the shard and key; with ``"skip"`` the dropped samples are added to
the batcher's ``skipped``. Images are decoded lazily at reduced size (``decode.open_image``), not by webdataset's
decoders, which decode every image at full size.

A PNG shard read whole without a single problem is kept decoded in memory (``SHARD_MEMO``, keyed by its file stamp
and index.json's): small datasets' training streams draw the same few shards hundreds of times, and parsing the tar
and decoding the PNGs was half of a 28 px pretraining step on one CPU core. A read from memory yields the same samples, labels and pixels as
one from disk; a shard or index rewritten since (new size, time stamp or inode) is read from disk again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from simclr_hpc.data.batching import Batcher
from simclr_hpc.data.decode import decoded_pixels, open_image
from simclr_hpc.data.index import INDEX, ShardInfo, SplitIndex
from simclr_hpc.data.limits import IMAGE_ERRORS
from simclr_hpc.data.memo import ByteCappedMemo, file_stamp
from simclr_hpc.data.shards import IMAGE_EXTS, TruncatedShard, iter_tar_samples
from simclr_hpc.data.sources import DataError

DECODE_ERRORS = IMAGE_ERRORS  # what PIL raises for corrupt, truncated or oversized image data
MAX_BARREN_SAMPLES = 2000
"""Undecodable samples in a row after which a skipping stream stops (far more than any real run loses in a row)."""
SHARD_MEMO = ByteCappedMemo(256 * 2**20)
"""Decoded PNG shards kept per process: ``(index stamp, shard stamp) -> [(pos, key, label, {"png": uint8 array})]``,
256 MB at most (``memo.file_stamp``)."""


@dataclass
class Shard:
    """One shard file of the split and the run of the split's key list it holds."""

    info: ShardInfo
    path: Path
    start: int  # position of the shard's first sample in the split's key list
    stop: int
    wanted: int  # how many of its samples the loader uses (all, or those in ``keys``)


class ShardReader:
    """Reads the wanted samples of one split's shards and turns them into ``(views, y, key)`` with ``transform``."""

    def __init__(
        self,
        split_index: SplitIndex,
        root: Path,
        split: str,
        transform,
        label_map: dict[int, int] | None,
        on_error: str,
    ):
        self.split_index, self.root, self.split, self.transform = split_index, root, split, transform
        self.label_map, self.on_error = label_map, on_error

    def problem(self, shard: Shard, message: str) -> None:
        """Raise DataError for ``message`` under ``on_error="raise"``; under ``"skip"`` the caller counts the loss."""
        if self.on_error == "raise":
            raise DataError(
                f"{shard.path}: {message}; run `simclr-hpc data verify {self.root}` "
                f"(or set data.on_error=skip to drop corrupt samples)"
            )

    def read(
        self, shard: Shard, want: Callable[[int], bool], batcher: Batcher, skip: int = 0
    ) -> Iterator[tuple[str, int, dict]]:
        """``(key, label, parts)`` of the wanted, sound samples of one shard, in file order, after the first ``skip``
        wanted ones; problems raise or count."""
        stamp = self._stamp(shard)
        remembered = SHARD_MEMO.get(stamp) if stamp is not None else None
        if remembered is not None:
            wanted = [(key, label, parts) for pos, key, label, parts in remembered if want(pos)]
            yield from wanted[skip:]
            return
        shard_keys = self.split_index.keys[shard.start : shard.stop]
        listed = {k: p for p, k in enumerate(shard_keys, start=shard.start)}
        expected = {k: p for k, p in listed.items() if want(p)}
        seen: set[str] = set()
        # What to remember: a PNG shard read clean, every sample of it, even when this read wants a subset (a 1 %
        # label subset would otherwise scan the whole split's tars for every few dozen samples it draws); a JPEG
        # shard is never kept (see _remember).
        whole: list | None = []
        try:
            for key, parts in iter_tar_samples(shard.path):
                pos = expected.get(key)
                if pos is None:
                    if key not in listed:
                        self.problem(shard, f"key {key} is not listed in index.json for this shard")
                    elif whole is not None:  # not wanted now: kept for later reads if it is a sound PNG sample
                        whole = self._kept(whole, listed[key], key, parts)
                    continue
                seen.add(key)
                if whole is not None and "png" not in parts:
                    whole = None  # not a PNG shard: holding its samples would hold the whole shard for nothing
                in_range = len(seen) > skip  # not before this read's start (a segment may start mid-shard)
                if not in_range and whole is None:
                    continue
                problem, label = self._check(pos, key, parts)
                if problem is not None:
                    if in_range:
                        self.problem(shard, problem)
                        batcher.skipped += 1
                    whole = None
                    continue
                if whole is not None:
                    whole.append((pos, key, label, parts))
                if in_range:
                    yield key, label, parts
        except FileNotFoundError:
            self.problem(shard, "shard file missing")
            whole = None
        except TruncatedShard as exc:
            where = f"after key {exc.after}" if exc.after else "at its start"
            self.problem(shard, f"truncated or corrupt tar {where} ({exc})")
            whole = None
        lost = len(expected) - len(seen)
        if lost:
            if self.on_error == "raise":
                missing = next(k for k in expected if k not in seen)
                self.problem(shard, f"key {missing}: listed in index.json but not in the shard ({lost} missing)")
            batcher.skipped += lost
        elif stamp is not None and whole is not None and len(whole) == len(shard_keys):
            _remember(stamp, whole)

    def _stamp(self, shard: Shard) -> tuple | None:
        """What identifies the shard's contents for ``SHARD_MEMO`` (None: the file is missing; reading reports it).
        The index's stamp too: positions and labels were checked against it when the shard was remembered."""
        try:
            return file_stamp(self.root / INDEX), file_stamp(shard.path)
        except FileNotFoundError:
            return None

    def _kept(self, whole: list, pos: int, key: str, parts: dict) -> list | None:
        """``whole`` with a sample this read does not want, kept for later reads, if it is a sound PNG sample; else
        None (the shard is not remembered)."""
        problem, label = self._check(pos, key, parts) if "png" in parts else ("not png", -1)
        if problem is not None:
            return None
        whole.append((pos, key, label, parts))
        return whole

    def _check(self, pos: int, key: str, parts: dict) -> tuple[str | None, int]:
        """``(problem or None, label)`` of a sample the index lists at ``pos``."""
        label, expected = _label(parts), int(self.split_index.labels[pos])
        if not any(e in parts for e in IMAGE_EXTS):
            return f"key {key}: missing image", -1
        if label is None:
            return f"key {key}: missing or unreadable label", -1
        if label != expected:
            return f"key {key}: label {label} differs from index.json ({expected})", -1
        return None, label

    def samples(
        self, draws: Iterator[dict], want: Callable[[int], bool], batcher: Batcher, guard: int | None
    ) -> Iterator[tuple]:
        """Pipeline stage: ``{"shard": Shard, "skip": n}`` draws -> ``(shard, key, label, parts)`` of their wanted,
        sound samples (after the first ``skip``).

        ``guard``: raise after that many consecutive shard reads gave nothing usable (an infinite stream over broken
        shards must not spin); None for a finite pass.
        """
        barren, shards = 0, set()
        for item in draws:
            shard = item["shard"]
            shards.add(shard.info.name)
            got = 0
            for key, label, raw in self.read(shard, want, batcher, item["skip"]):
                got += 1
                yield shard, key, label, raw
            barren = 0 if got else barren + 1
            if guard is not None and barren > guard:
                raise DataError(
                    f"{self.root}: split {self.split}: no readable samples in {len(shards)} shard(s) "
                    f"after {barren} reads; run `simclr-hpc data verify {self.root}`"
                )

    def decoded(self, samples: Iterator[tuple], rng: random.Random, batcher: Batcher) -> Iterator[tuple]:
        """Pipeline stage: ``(shard, key, label, parts)`` -> ``(views, y, key)``; bad images raise or are counted.
        Under ``skip``, MAX_BARREN_SAMPLES undecodable samples in a row stop the stream with a reason: shards whose
        every image is broken must not make an endless stream spin."""
        barren = 0
        for shard, key, label, raw in samples:
            sample = self._transform(shard, key, label, raw, rng, batcher)
            if sample is not None:
                barren = 0
                yield sample[0], sample[1], key
                continue
            barren += 1
            if barren >= MAX_BARREN_SAMPLES:
                raise DataError(
                    f"{self.root}: split {self.split}: the last {barren} samples read were all "
                    f"undecodable (e.g. {shard.path.name} key {key}); data.on_error=skip cannot train on "
                    f"nothing: run `simclr-hpc data verify {self.root}` and rebuild the shards"
                )

    def _transform(self, shard: Shard, key: str, label: int, parts: dict, rng: random.Random, batcher: Batcher):
        """Decode and transform one sample; returns (views, y) or None when it is corrupt and skipped."""
        ext = next(e for e in IMAGE_EXTS if e in parts)
        try:
            img = parts[ext]
            if getattr(self.transform, "wants_bytes", False):
                pass  # the transform decodes later itself (data.decode_on_device)
            elif not isinstance(img, np.ndarray):  # an array: decoded already (a shard read from SHARD_MEMO)
                img = open_image(img)
                if ext == "png":
                    img.load()
            out = self.transform(img, rng)
        except DECODE_ERRORS as exc:
            self.problem(shard, f"key {key}: undecodable image ({type(exc).__name__}: {exc})")
            batcher.skipped += 1
            return None
        views = out if isinstance(out, tuple) else (out,)
        return views, self.label_map[label] if self.label_map is not None else label


def _remember(stamp: tuple, samples: list[tuple[int, str, int, dict]]) -> None:
    """Keep a cleanly read shard's ``(pos, key, label, parts)`` with their PNGs decoded (not JPEG shards, nor a shard
    with an image that does not decode)."""
    kept, nbytes = [], 0
    for pos, key, label, parts in samples:
        if "png" not in parts:
            return
        try:
            pixels = decoded_pixels(parts["png"])
        except DECODE_ERRORS:
            return
        kept.append((pos, key, label, {"png": pixels}))
        nbytes += pixels.nbytes + len(key) + 64
    SHARD_MEMO.put(stamp, kept, nbytes)


def _label(parts: dict) -> int | None:
    try:
        return int(parts["cls"].decode().strip())
    except (KeyError, UnicodeDecodeError, ValueError):
        return None
