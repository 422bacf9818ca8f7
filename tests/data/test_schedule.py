"""The balanced shard schedule: every sample is read equally often whatever the ratio of shards to streams."""

import numpy as np
import pytest

from simclr_hpc.data.schedule import ShardSchedule
from simclr_hpc.data.stream import segment_candidates


def _sample_reads(wanted, ranks, streams_per_rank, steps_per_segment, batch, buffer, segments):
    """How often each sample is read by simulated streams, each reading what ``ShardDataset`` makes it read: in
    segment j, stream u of rank r reads ``per`` = ``segment_candidates(...)`` candidates from ``j * per`` on (so
    ``segments`` segments read its first ``segments * per``: see the next test but one)."""
    n = ranks * streams_per_rank
    schedule = ShardSchedule(wanted, n, seed=7)
    counts = [np.zeros(w) for w in wanted]
    for rank in range(ranks):
        for u in range(streams_per_rank):
            per = segment_candidates(len(range(u, steps_per_segment, streams_per_rank)), batch, buffer)
            for shard, lo, hi in schedule.reads(rank * streams_per_rank + u, 0, segments * per):
                counts[shard][lo:hi] += 1
    return np.concatenate(counts)


def _spread(counts):
    return counts.min() / counts.mean(), counts.max() / counts.mean()


def test_1025_shards_over_640_streams_are_read_equally_often_within_5_percent():
    wanted = [100] * 1024 + [37]  # the split's last shard is short
    counts = _sample_reads(
        wanted, ranks=64, streams_per_rank=10, steps_per_segment=50, batch=32, buffer=100, segments=40
    )
    low, high = _spread(counts)
    assert 0.95 <= low and high <= 1.05, (low, high)
    # What dealing each stream a fixed slice (shards[g::n], the former stream) gives: a quarter of the shards belong
    # to one-shard streams and are read twice as often as the others.
    per_stream = [len(range(g, 1025, 640)) for g in range(640)]
    dealt = np.array([1.0 / per_stream[s % 640] for s in range(1025)])
    assert dealt.max() / dealt.min() == 2.0


def test_7_shards_over_16_streams_are_read_equally_often_within_5_percent():
    counts = _sample_reads(
        [50] * 6 + [13], ranks=2, streams_per_rank=8, steps_per_segment=16, batch=8, buffer=20, segments=40
    )
    low, high = _spread(counts)
    assert 0.95 <= low and high <= 1.05, (low, high)


def test_a_stream_continues_where_its_previous_candidates_ended():
    schedule = ShardSchedule([5, 3, 8, 2], n_streams=3, seed=1)
    whole = schedule.reads(2, 0, 40)
    first, rest = schedule.reads(2, 0, 17), schedule.reads(2, 17, 23)
    flat = [(s, i) for s, lo, hi in whole for i in range(lo, hi)]
    assert [(s, i) for s, lo, hi in first + rest for i in range(lo, hi)] == flat
    assert sum(hi - lo for _, lo, hi in whole) == 40


def test_the_schedule_is_a_function_of_its_seed():
    a, b, c = (ShardSchedule([4] * 9, 5, seed) for seed in (0, 0, 1))
    draws = np.arange(200)
    assert np.array_equal(a.shard_at(draws), b.shard_at(draws))
    assert not np.array_equal(a.shard_at(draws), c.shard_at(draws))
    # each epoch of 9 draws is a permutation of the 9 shards
    assert all(sorted(a.shard_at(np.arange(e * 9, e * 9 + 9)).tolist()) == list(range(9)) for e in range(20))
    with pytest.raises(ValueError):
        ShardSchedule([3, 0], 2, 0)
