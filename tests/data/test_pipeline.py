import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import rewrite_shard, truncate_file

from simclr_hpc.data.augment import EvalTransform, SimCLRBatchViews, SimCLRViews, SupervisedAugment
from simclr_hpc.data.pipeline import eval_loader, train_loader
from simclr_hpc.data.shards import read_index, write_shards
from simclr_hpc.data.sources import DataError

ROOT = Path(__file__).resolve().parents[2]


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_train_batches_have_the_documented_shape_and_never_end(shapes_shards):
    it = train_loader(shapes_shards, "train", SimCLRViews(32), batch_per_device=16, seed=0)
    batches = _take(it, 10)  # 160 samples from a 108-sample split: the stream resamples
    b = batches[0]
    assert set(b) == {"views", "y", "keys", "skipped"}
    assert len(b["views"]) == 2 and b["views"][0].shape == (16, 3, 32, 32) and b["views"][0].dtype == torch.float32
    assert b["y"].dtype == torch.long and len(b["keys"]) == 16 and b["skipped"] == 0
    index = read_index(shapes_shards)
    labels = dict(zip(index.split("train").keys, index.split("train").labels.tolist()))
    assert all(labels[k] == int(y) for batch in batches for k, y in zip(batch["keys"], batch["y"]))


_DUMP = textwrap.dedent("""
    import sys, torch
    from simclr_hpc.data.augment import SimCLRViews
    from simclr_hpc.data.pipeline import train_loader
    it = train_loader(sys.argv[1], "train", SimCLRViews(32), batch_per_device=8, seed=5, rank=1, world_size=2,
                      first_segment=3, num_workers=2)
    torch.save([next(it) for _ in range(4)], sys.argv[2])
""")


def test_same_seed_rank_segment_gives_bitwise_identical_batches_in_a_fresh_process(shapes_shards, tmp_path):
    out = tmp_path / "batches.pt"
    subprocess.run([sys.executable, "-c", _DUMP, str(shapes_shards), str(out)], check=True, cwd=ROOT, timeout=120)
    theirs = torch.load(out, weights_only=True)
    it = train_loader(
        shapes_shards,
        "train",
        SimCLRViews(32),
        batch_per_device=8,
        seed=5,
        rank=1,
        world_size=2,
        first_segment=3,
        num_workers=2,
    )
    ours = _take(it, 4)
    for a, b in zip(ours, theirs):
        assert a["keys"] == b["keys"] and torch.equal(a["y"], b["y"])
        assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
    other = _take(
        train_loader(
            shapes_shards,
            "train",
            SimCLRViews(32),
            batch_per_device=8,
            seed=5,
            rank=1,
            world_size=2,
            first_segment=4,
            num_workers=2,
        ),
        1,
    )[0]
    assert other["keys"] != ours[0]["keys"] or not torch.equal(other["views"][0], ours[0]["views"][0])


def test_ranks_draw_different_streams(shapes_shards):
    a = next(train_loader(shapes_shards, "train", SimCLRViews(32), batch_per_device=8, seed=0, rank=0, world_size=2))
    b = next(train_loader(shapes_shards, "train", SimCLRViews(32), batch_per_device=8, seed=0, rank=1, world_size=2))
    assert a["keys"] != b["keys"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_eval_reads_every_sample_exactly_once_across_two_ranks(shapes_shards, num_workers):
    index = read_index(shapes_shards)
    seen = []
    for rank in (0, 1):
        for batch in eval_loader(
            shapes_shards,
            "test",
            EvalTransform(32),
            batch_per_device=7,
            rank=rank,
            world_size=2,
            num_workers=num_workers,
        ):
            assert batch["views"][0].shape[1:] == (3, 32, 32) and len(batch["views"]) == 1
            seen += batch["keys"]
    assert sorted(seen) == sorted(index.split("test").keys) and len(seen) == len(set(seen))


def test_key_subset_and_label_map(shapes_shards):
    index = read_index(shapes_shards)
    train = index.split("train")
    keys = [k for k, y in zip(train.keys, train.labels) if y in (1, 3)][:5]  # a tiny subset still gives full batches
    it = train_loader(
        shapes_shards, "train", SupervisedAugment(32), batch_per_device=16, seed=0, keys=keys, label_map={1: 0, 3: 1}
    )
    for batch in _take(it, 3):
        assert set(batch["keys"]) <= set(keys) and len(batch["keys"]) == 16
        assert set(batch["y"].tolist()) <= {0, 1}
    test = index.split("test")
    subset = [k for k, y in zip(test.keys, test.labels) if y == 2]
    got = [
        k
        for b in eval_loader(
            shapes_shards, "test", EvalTransform(32), batch_per_device=8, keys=subset, label_map={2: 0}
        )
        for k in b["keys"]
    ]
    assert sorted(got) == sorted(subset)
    with pytest.raises(DataError, match="not in split train"):
        train_loader(shapes_shards, "train", SupervisedAugment(32), batch_per_device=4, seed=0, keys=["nope"])
    with pytest.raises(DataError, match="label_map has no entry"):
        train_loader(
            shapes_shards, "train", SupervisedAugment(32), batch_per_device=4, seed=0, keys=keys, label_map={1: 0}
        )


@pytest.fixture
def corrupt(tmp_path):
    out = tmp_path / "c"
    write_shards("shapes:2:8:16", out, shard_size=8, seed=0)
    index = read_index(out)
    test = index.split("test")
    bad = test.keys[3]
    rewrite_shard(out / test.shards[0].name, lambda n, d: b"\x89PNG broken" if n == f"{bad}.png" else d)
    return out, index, bad


def test_corrupt_sample_raises_naming_shard_and_key(corrupt):
    out, index, bad = corrupt
    with pytest.raises(DataError, match=rf"test-000000.tar: key {bad}: undecodable image"):
        list(eval_loader(out, "test", EvalTransform(16), batch_per_device=4))


def test_skip_drops_corrupt_sample_and_counts_it(corrupt):
    out, index, bad = corrupt
    batches = list(eval_loader(out, "test", EvalTransform(16), batch_per_device=4, on_error="skip"))
    keys = [k for b in batches for k in b["keys"]]
    assert bad not in keys and len(keys) == len(index.split("test").keys) - 1
    assert sum(b["skipped"] for b in batches) == 1


def test_truncated_shard_in_training_raises_or_is_counted(tmp_path):
    out = tmp_path / "t"
    write_shards("shapes:2:10:16", out, shard_size=5, seed=0)
    shard = read_index(out).split("train").shards[0]
    truncate_file(out / shard.name, 0.4)
    with pytest.raises(DataError, match=rf"{shard.name}: truncated or corrupt tar"):
        _take(train_loader(out, "train", SimCLRViews(16), batch_per_device=4, seed=0), 20)
    batches = _take(train_loader(out, "train", SimCLRViews(16), batch_per_device=4, seed=0, on_error="skip"), 20)
    assert sum(b["skipped"] for b in batches) > 0
    assert all(len(b["keys"]) == 4 for b in batches)


def test_nothing_readable_raises_instead_of_hanging(tmp_path):
    out = tmp_path / "e"
    write_shards("shapes:2:4:16", out, shard_size=8, seed=0)
    for shard in read_index(out).split("train").shards:
        rewrite_shard(out / shard.name, lambda n, d: None if n.endswith(".cls") else d)
    with pytest.raises(DataError, match="no readable samples"):
        next(train_loader(out, "train", SimCLRViews(16), batch_per_device=4, seed=0, on_error="skip"))


def test_a_second_eval_pass_in_the_process_is_remembered_until_the_shards_change(tmp_path):
    out = tmp_path / "m"
    write_shards("shapes:2:8:16", out, shard_size=8, seed=0)
    first = list(eval_loader(out, "test", EvalTransform(16), batch_per_device=4))
    # The same pass again comes from memory: it no longer needs the shards' contents (same size and time stamp).
    shard = out / read_index(out).split("test").shards[0].name
    stat = shard.stat()
    data = shard.read_bytes()
    shard.write_bytes(b"\0" * len(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = list(eval_loader(out, "test", EvalTransform(16), batch_per_device=4))
    assert [b["keys"] for b in again] == [b["keys"] for b in first]
    assert all(torch.equal(a["views"][0], b["views"][0]) for a, b in zip(first, again))
    # A rewritten shard (new time stamp) is read again, and its damage shows.
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    with pytest.raises(DataError):
        list(eval_loader(out, "test", EvalTransform(16), batch_per_device=4))
    # A different batch size is a different pass.
    shard.write_bytes(data)
    sizes = [len(b["keys"]) for b in eval_loader(out, "test", EvalTransform(16), batch_per_device=3)]
    assert sum(sizes) == sum(len(b["keys"]) for b in first) and max(sizes) == 3


def test_a_training_stream_reads_each_png_shard_from_disk_once_per_process(tmp_path):
    out = tmp_path / "tm"
    write_shards("shapes:2:12:16", out, shard_size=6, seed=0)  # 4 train shards of 6 samples: drawn many times
    shards = [out / s.name for s in read_index(out).split("train").shards]
    first = _take(train_loader(out, "train", SimCLRViews(16), batch_per_device=4, seed=3), 12)
    # Every shard was read whole and clean, so it is remembered: the stream no longer needs the files' contents
    # (zeroed under the same size and time stamp) and gives the same batches, bit for bit.
    saved = []
    for shard in shards:
        stat, data = shard.stat(), shard.read_bytes()
        saved.append((stat, data))
        shard.write_bytes(b"\0" * len(data))
        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = _take(train_loader(out, "train", SimCLRViews(16), batch_per_device=4, seed=3), 12)
    for a, b in zip(first, again):
        assert a["keys"] == b["keys"] and torch.equal(a["y"], b["y"])
        assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
    # A label subset of remembered shards is served from memory too, and holds only the subset's keys.
    subset = read_index(out).split("train").keys[:5]
    assert {
        k
        for b in _take(train_loader(out, "train", SimCLRViews(16), batch_per_device=4, seed=3, keys=subset), 5)
        for k in b["keys"]
    } <= set(subset)
    # A shard rewritten since (new time stamp) is read from disk again, and its damage shows (all zeros: an empty tar).
    os.utime(shards[0], ns=(saved[0][0].st_atime_ns, saved[0][0].st_mtime_ns + 1))
    with pytest.raises(DataError, match=rf"{shards[0].name}: key .*: listed in index.json but not in the shard"):
        _take(train_loader(out, "train", SimCLRViews(16), batch_per_device=4, seed=3), 12)


def test_a_label_subset_stream_keeps_its_shards_whole_so_later_subsets_read_from_memory(tmp_path):
    """A 1 % label subset drawn by a training stream must not rescan the split's tars for every few samples: the
    first read of a PNG shard keeps all of it decoded, whatever subset that read wanted."""
    out = tmp_path / "sub"
    write_shards("shapes:2:12:16", out, shard_size=6, seed=0)
    split = read_index(out).split("train")
    first = split.shards[0]
    keys = split.keys[: first.count]  # the first shard's samples, in index order
    batches = _take(train_loader(out, "train", SupervisedAugment(16), batch_per_device=2, seed=1, keys=keys[:2]), 3)
    assert {k for b in batches for k in b["keys"]} <= set(keys[:2])
    shard = out / first.name
    stat, data = shard.stat(), shard.read_bytes()
    shard.write_bytes(b"\0" * len(data))  # same size and time stamp: only the memo can serve it now
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other = _take(train_loader(out, "train", SupervisedAugment(16), batch_per_device=2, seed=1, keys=keys[2:]), 3)
    labels = dict(zip(split.keys, split.labels))
    assert {k for b in other for k in b["keys"]} <= set(keys[2:])
    assert all(int(y) == labels[k] for b in other for k, y in zip(b["keys"], b["y"]))


def test_a_batched_transform_gives_the_same_batch_shape_as_a_per_image_one(shapes_shards):
    size = read_index(shapes_shards).image_size
    batched = SimCLRBatchViews(32, size, crop_min_scale=1.0)
    a = next(train_loader(shapes_shards, "train", batched, batch_per_device=16, seed=0))
    b = next(train_loader(shapes_shards, "train", SimCLRViews(32, crop_min_scale=1.0), batch_per_device=16, seed=0))
    assert a["keys"] == b["keys"] and torch.equal(a["y"], b["y"])
    assert [v.shape for v in a["views"]] == [v.shape for v in b["views"]] == [(16, 3, 32, 32)] * 2
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a["views"], b["views"]))  # whole-image crops: equal


def _same_batches(a, b):
    return all(
        x["keys"] == y["keys"]
        and torch.equal(x["y"], y["y"])
        and all(torch.equal(u, v) for u, v in zip(x["views"], y["views"]))
        for x, y in zip(a, b, strict=True)
    )


def test_batches_do_not_depend_on_the_worker_count_or_on_the_segment_a_loader_starts_at(shapes_shards):
    """Run steps 0..7 in segments of 3 steps, 2 streams per rank: one loader in this process, one with 2 workers (3
    steps per segment is not a multiple of 2), and loaders started at segments 1 and 2 (a resumed run) agree."""

    def run(workers, first_segment):
        return list(
            train_loader(
                shapes_shards,
                "train",
                SupervisedAugment(32),
                batch_per_device=4,
                seed=2,
                num_workers=workers,
                streams_per_rank=2,
                first_segment=first_segment,
                steps_per_segment=3,
                total_steps=8,
            )
        )

    whole = run(0, 0)
    assert len(whole) == 8 and len({tuple(b["keys"]) for b in whole}) == 8
    assert _same_batches(run(2, 0), whole)
    assert _same_batches(run(2, 1), whole[3:])
    assert _same_batches(run(1, 2), whole[6:])
    with pytest.raises(DataError, match="must divide the stream count"):
        train_loader(
            shapes_shards, "train", SupervisedAugment(32), batch_per_device=4, seed=2, num_workers=2, streams_per_rank=3
        )


def test_a_segment_stream_reads_the_candidates_that_the_schedule_gives_it(shapes_shards):
    from simclr_hpc.data.stream import Placement, Resampling, Selection, ShardDataset

    resampling = Resampling(seed=1, streams_per_rank=2, steps_per_segment=6, shuffle_buffer_bytes=40_000)
    ds = ShardDataset(
        selection=Selection(shapes_shards, "train"),
        transform=SupervisedAugment(32),
        batch_size=4,
        placement=Placement(rank=1, world_size=2),
        resampling=resampling,
    )
    assert 2 <= ds.buffer <= 20  # about 40 kB over 2 streams of 2 kB samples
    keys = read_index(shapes_shards).split("train").keys
    for segment, stream in [(0, 0), (3, 1)]:
        per = ds.segment_candidates(stream)
        reads = ds.schedule.reads(1 * 2 + stream, segment * per, per)
        wanted = [ds.candidates[s].start + i for s, lo, hi in reads for i in range(lo, hi)]
        batches = ds._segment_stream(segment, stream)
        got = [k for _ in range(3) for k in next(batches)["keys"]]  # stream 0 and 1 each have 3 of the 6 steps
        assert set(got) <= {keys[p] for p in wanted} and len(got) == 12


def test_an_eval_pass_larger_than_the_memo_is_not_kept(tmp_path, monkeypatch):
    from simclr_hpc.data import pipeline

    out = tmp_path / "big"
    write_shards("shapes:2:8:16", out, shard_size=8, seed=0)
    kept_sizes = []
    real_put = pipeline._eval_memo.put
    monkeypatch.setattr(pipeline._eval_memo, "cap", 3 * 4 * 3 * 16 * 16 * 4)  # 3 batches of 4 images: < 40 images
    monkeypatch.setattr(
        pipeline._eval_memo, "put", lambda key, value, n: (kept_sizes.append(n), real_put(key, value, n))
    )
    passes = pipeline.eval_loader(out, "test", EvalTransform(16), batch_per_device=4)
    first = next(passes)
    assert len(first["keys"]) == 4 and sum(len(b["keys"]) for b in passes) == 40 - 4
    assert kept_sizes == []
