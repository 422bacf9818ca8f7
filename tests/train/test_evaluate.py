"""Top-k counting and the accuracy metrics every classifier stage records."""

import pytest
import torch

from simclr_hpc.train.evaluate import accuracy_metrics, topk_correct


def test_topk_correct_counts_the_true_class_among_the_k_highest_logits():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    y = torch.tensor([1, 2, 0, 1])
    # top-1 hits row 0 only: row 3's tie goes to the first maximum (class 0), as argmax does
    assert topk_correct(logits, y, (1, 2, 3, 5)) == [1, 3, 4, 4]
    assert topk_correct(logits, y, (1,))[0] == int((logits.argmax(1) == y).sum())


def test_accuracy_metrics_normalise_top1_so_chance_is_zero_and_perfect_is_one():
    assert accuracy_metrics(25, 100, 4) == pytest.approx(
        {"top1": 0.25, "chance_norm_top1": 0.0, "num_classes": 4, "eval_images": 100}
    )
    assert accuracy_metrics(10, 10, 2)["chance_norm_top1"] == 1.0
    assert accuracy_metrics(0, 0, 10)["top1"] == 0.0  # no eval images: no division by zero
