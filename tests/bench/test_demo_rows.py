"""bench/demo.py's science rows, from a results.csv written by hand: margins per seed, the worst seed decides."""

import csv

import pytest

from bench.demo import science_rows

FIELDS = [
    "stage",
    "status",
    "protocol",
    "head_layer",
    "section",
    "baseline",
    "label_fraction",
    "seed",
    "arch",
    "encoder",
    "top1",
    "eval_images",
]


def _row(baseline, fraction, seed, top1, arch="resnet18", encoder="r18"):
    return {
        "stage": "finetune",
        "status": "done",
        "protocol": "linear",
        "head_layer": "0",
        "section": "finetune",
        "baseline": baseline,
        "label_fraction": fraction,
        "seed": seed,
        "arch": arch if baseline != "pixels" else "",
        "encoder": encoder if not baseline else baseline,
        "top1": top1,
        "eval_images": 1000,
    }


def test_the_worst_seed_decides_and_exactly_three_points_is_three(tmp_path):
    rows = []
    for seed, (ours, pixels, random) in enumerate([(0.841, 0.803, 0.655), (0.828, 0.798, 0.608)]):
        rows += [_row("", "0.1", seed, ours), _row("pixels", "0.1", seed, pixels), _row("random", "0.1", seed, random)]
        rows += [_row("", "1.0", seed, 0.88), _row("pixels", "1.0", seed, 0.881)]
    rows.append(_row("random", "0.1", 0, 0.99, arch="resnet34"))  # another architecture's baseline is not ours
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    pixels10, random10, pixels100 = science_rows(path)
    assert (pixels10.ours, pixels10.baseline) == (pytest.approx(82.8), pytest.approx(79.8))
    assert pixels10.ratio == 3.0 and pixels10.passed is True  # 828 vs 798 of 1,000 images: exactly +3.0 points
    assert random10.ratio == 18.6 and random10.passed is True  # seed 0 (84.1 vs 65.5), not the resnet34 row
    assert pixels100.ratio == -0.1 and pixels100.passed is False
    assert "r18 s1: 82.8 vs 79.8 (+3.0)" in pixels10.note
