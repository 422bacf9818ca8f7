"""The benchmark modules run at a tiny size and produce well-formed result rows (not timings: those are bench/)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("lightly")

from bench._common import Row  # noqa: E402
from bench.run_all import table  # noqa: E402


def _well_formed(row: Row) -> None:
    assert row.bench and row.case and row.metric
    if row.ratio is not None:
        assert row.ours > 0 and row.baseline > 0 and math.isfinite(row.ratio)
        assert row.ratio == pytest.approx(row.ours / row.baseline) or row.bench == "scaling"
    if row.target is not None:
        assert row.target.split()[0] in ("<=", ">=") and float(row.target.split()[1]) > 0
        assert row.passed in (True, False)


def test_loss_bench_rows_at_n64_have_time_and_memory_and_equal_values():
    from bench import loss

    rows = loss.run(sizes=(64,), reps=1, memory=True)
    assert [r.metric for r in rows] == ["fwd+bwd median s", "peak RSS added, MB"]
    for row in rows:
        _well_formed(row)
    assert rows[0].target == "<= 1.0"
    assert "= lightly" in rows[0].note  # the values were compared (the module asserts they agree)


def test_pipeline_bench_rows_on_a_handful_of_images():
    from bench import pipeline

    rows = pipeline.run(cases=("32px-png",), reps=1, batches=1, batch_size=4, workers=0, n_images=16)
    assert len(rows) == 2  # vs torchvision, and the batched views vs our per-image ones
    for row in rows:
        _well_formed(row)
    assert rows[0].ours > 0 and "classic PIL" in rows[0].note
    assert rows[1].baseline == rows[0].ours and rows[1].target == pipeline.BATCHED_TARGET


def test_torchvision_baseline_gives_two_normalised_views_of_the_requested_size():
    import numpy as np
    from PIL import Image

    from bench.pipeline import torchvision_classic_views, torchvision_views

    # A dark image (every pixel below ImageNet's mean of about 0.45): its normalised views hold negative values
    # whatever the random crop and colour jitter draw (a mid-grey noise image brightened by the jitter need not).
    img = Image.fromarray(np.random.default_rng(0).integers(0, 64, (60, 80, 3), dtype=np.uint8))
    for make in (torchvision_views, torchvision_classic_views):
        a, b = make(32, "imagenet", 1.0)(img)
        assert a.shape == b.shape == (3, 32, 32) and a.dtype == b.dtype
        assert a.min() < 0 and b.min() < 0  # normalised, not [0, 1]


def test_train_step_bench_row_at_tiny_batch():
    from bench import train_step

    rows = train_step.run(batch=8, widths=(0.125,), reps=1)
    assert len(rows) == 1 and rows[0].target == ">= 0.95"
    _well_formed(rows[0])


def test_results_table_marks_pass_miss_and_not_measured():
    rows = [
        Row("x", "a", "s", 1.0, 2.0, 0.5, "<= 1.0"),
        Row("x", "b", "img/s", 1.0, 2.0, 0.5, ">= 2.0"),
        Row("x", "c", "eff", None, None, None, None, "not measured: no cluster"),
    ]
    text = table(rows)
    assert "| PASS |" in text and "| **MISS** |" in text and "| not measured |" in text


@pytest.mark.slow  # three fresh interpreters (shards, ours, lightly): about 40 s on a quiet machine, 666 s at load 15-20
def test_time_to_accuracy_row_at_tiny_size_reaches_a_low_target_on_both_sides():
    """Both sides pretrain a few steps on a small generated dataset and are probed by kNN on its val split; a 5 %
    target (below chance) is reached at the first probe, so the row has both times and a ratio."""
    from bench import time_to_accuracy

    rows = time_to_accuracy.run(
        width=0.125,
        size=16,
        batch=16,
        max_steps=4,
        eval_every=2,
        target=5.0,
        source="shapes:4:24:16",
        val_fraction=0.25,
    )
    assert len(rows) == 1 and rows[0].target == "<= 0.7"
    _well_formed(rows[0])
    assert rows[0].ours > 0 and rows[0].baseline > 0
    assert "ours 2:" in rows[0].note and "lightly 2:" in rows[0].note  # each side's first probe, at step 2


def test_knn_top1_equals_a_brute_force_vote():
    import torch

    from bench.time_to_accuracy import knn_top1

    gen = torch.Generator().manual_seed(0)
    bank, query = torch.randn(50, 8, generator=gen), torch.randn(20, 8, generator=gen)
    bank_y, query_y = torch.randint(0, 3, (50,), generator=gen), torch.randint(0, 3, (20,), generator=gen)
    hits = 0
    for q, y in zip(query, query_y):
        sims = [(float(torch.dot(q / q.norm(), b / b.norm())), int(c)) for b, c in zip(bank, bank_y)]
        votes = [0.0, 0.0, 0.0]
        for s, c in sorted(sims, reverse=True)[:5]:
            votes[c] += math.exp(s / 0.1)
        hits += max(range(3), key=lambda c: votes[c]) == int(y)
    assert knn_top1(bank, bank_y, query, query_y, k=5, t=0.1) == pytest.approx(100 * hits / 20)


def test_sharding_bench_rows_on_a_few_files(tmp_path, monkeypatch):
    from bench import sharding

    monkeypatch.setattr(sharding, "CACHE", tmp_path)
    rows = sharding.run(n_images=40, size=32, reps=1, shard_size=8)
    assert [r.metric for r in rows] == ["files/s", "time s"]
    for row in rows:
        _well_formed(row)
    assert rows[0].target == sharding.THROUGHPUT_TARGET and rows[1].target == sharding.RESUME_TARGET


def test_eval_memory_bench_row_on_a_few_images(tmp_path, monkeypatch):
    from bench import eval_memory, sharding

    monkeypatch.setattr(sharding, "CACHE", tmp_path)
    monkeypatch.setattr(eval_memory, "CACHE", tmp_path)
    (row,) = eval_memory.run(sizes=(40, 80), size=32, steps=2)
    _well_formed(row)
    assert row.metric == "peak RSS, MB" and row.ours > 100 and row.target == eval_memory.TARGET


def test_device_decode_bench_row_on_a_few_images():
    from bench import device_decode

    (row,) = device_decode.run(n_images=16, batch=4, batches=1, reps=1)
    _well_formed(row)
    assert row.metric == "images/s" and row.target is None
