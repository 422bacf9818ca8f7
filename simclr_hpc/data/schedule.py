"""Which shard a training stream reads next: one balanced schedule of shard draws shared by every stream of a run.

The draws of a run form one global sequence: epoch ``e`` of it is a seeded permutation of the candidate shards (those
holding a wanted sample), epoch after epoch. Stream ``g`` of ``n`` takes draws ``g, g + n, g + 2n, ...``, so the
streams, which all read at the same pace, have together read a prefix of that sequence at any time, and every shard
is read as often as every other (to within one draw) whatever the ratio of shards to streams. Dealing each stream a
fixed slice of the shards instead (``shards[g::n]``) reads a shard of a one-shard stream twice as often as one of a
two-shard stream: with 1,025 shards over 640 streams, a quarter of the data is seen twice as often.

A stream's *candidates* are the wanted samples of its draws, in draw order. Training segment ``j`` of a stream starts
at candidate position ``j * per_segment`` (``draws_from``): a pure function of the stream and the segment, so a resumed
run reads exactly what an uninterrupted one reads, and consecutive segments cover a stream's candidates without gaps
(the first draw of a segment is read from an offset: no position in a shard is favoured).

Pure numpy (no torch): ``tests/data/test_schedule.py`` simulates hundreds of streams with it in milliseconds.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

_BLOCK_DRAWS = 1 << 16
"""Permutations are drawn in blocks of about this many draws (one generator per block, not per epoch)."""
_WALK_CHUNK = 256
"""Draws looked at per step of a stream's reading (its walk to a start position steps by up to 64 times more)."""


class ShardSchedule:
    """The global draw sequence over ``len(wanted)`` candidate shards (``wanted[s]`` wanted samples each, all > 0),
    shared by ``n_streams`` streams, seeded by ``seed``."""

    def __init__(self, wanted: Sequence[int], n_streams: int, seed: int):
        self.wanted = np.asarray(wanted, dtype=np.int64)
        if self.wanted.ndim != 1 or len(self.wanted) == 0 or (self.wanted <= 0).any():
            raise ValueError("a schedule needs at least one shard, each with a wanted sample")
        if n_streams < 1:
            raise ValueError(f"n_streams {n_streams}: must be >= 1")
        self.n_shards, self.n_streams, self.seed = len(self.wanted), n_streams, seed
        self.epochs_per_block = max(1, _BLOCK_DRAWS // self.n_shards)
        self._blocks: dict[int, np.ndarray] = {}

    def _block(self, block: int) -> np.ndarray:
        """Permutations of epochs ``block * epochs_per_block ...``, one row each (the last few blocks are kept)."""
        if block not in self._blocks:
            if len(self._blocks) >= 8:
                del self._blocks[next(iter(self._blocks))]
            rng = np.random.default_rng([self.seed, block, 2108])
            rows = np.broadcast_to(np.arange(self.n_shards), (self.epochs_per_block, self.n_shards))
            self._blocks[block] = rng.permuted(rows, axis=1)
        return self._blocks[block]

    def shard_at(self, draws: np.ndarray) -> np.ndarray:
        """Candidate shard index of each global draw number in ``draws``."""
        draws = np.asarray(draws, dtype=np.int64)
        epoch, slot = np.divmod(draws, self.n_shards)
        block, row = np.divmod(epoch, self.epochs_per_block)
        out = np.empty_like(draws)
        for b in np.unique(block):
            here = block == b
            out[here] = self._block(int(b))[row[here], slot[here]]
        return out

    def locate(self, stream: int, position: int) -> tuple[int, int]:
        """``(k, skip)``: candidate ``position`` of ``stream`` is wanted sample ``skip`` of the stream's draw ``k``."""
        if not 0 <= stream < self.n_streams:
            raise ValueError(f"stream {stream} outside 0..{self.n_streams - 1}")
        k0, before = 0, 0
        # Roughly the draws that reach the position, so that the walk generates few permutations it does not use.
        chunk = int(min(64 * _WALK_CHUNK, max(_WALK_CHUNK, 1.1 * position / self.wanted.mean())))
        while True:
            k = np.arange(k0, k0 + chunk, dtype=np.int64)
            ends = before + np.cumsum(self.wanted[self.shard_at(stream + k * self.n_streams)])
            hit = int(np.searchsorted(ends, position, side="right"))
            if hit < len(k):
                start = int(ends[hit - 1]) if hit else before
                return k0 + hit, position - start
            k0, before = k0 + chunk, int(ends[-1])

    def draws_from(self, stream: int, position: int) -> Iterator[tuple[int, int]]:
        """``(shard, skip)`` per draw of ``stream`` from candidate ``position`` on, endlessly: read the shard's wanted
        samples after the first ``skip`` (``skip`` is 0 after the first draw)."""
        k, skip = self.locate(stream, position)
        while True:
            ks = np.arange(k, k + _WALK_CHUNK, dtype=np.int64)
            for shard in self.shard_at(stream + ks * self.n_streams).tolist():
                yield shard, skip
                skip = 0
            k += _WALK_CHUNK

    def reads(self, stream: int, position: int, count: int) -> list[tuple[int, int, int]]:
        """``(shard, lo, hi)``: the wanted samples ``lo:hi`` of each shard that candidates ``position`` to
        ``position + count`` of ``stream`` are (what a stream that consumes ``count`` candidates reads)."""
        out, left = [], count
        for shard, skip in self.draws_from(stream, position):
            if left <= 0:
                break
            take = min(left, int(self.wanted[shard]) - skip)
            out.append((shard, skip, skip + take))
            left -= take
        return out
