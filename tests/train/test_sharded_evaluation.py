"""Evaluation features gathered as tensors, and eval metrics from per-rank shares, equal one process's."""

import pytest
import torch

from tests.distributed_helpers import run_ranks

pytestmark = pytest.mark.dist


def test_three_ranks_with_uneven_and_empty_shares_gather_and_count_what_one_process_does(tmp_path):
    from simclr_hpc.train.evaluate import logits_metrics
    from simclr_hpc.train.knn import knn_accuracy

    gen = torch.Generator().manual_seed(0)  # the data of tests/dist_worker.py's case_gather, in this one process
    x, y = torch.randn(5, 4, generator=gen), torch.arange(5) % 3
    one = {
        "x": x,
        "y": y,
        "metrics": logits_metrics(torch.randn(5, 7, generator=gen), y, 7),
        "knn": knn_accuracy(x, y, x, y, 3, ks=(1, 3)),
    }
    three = run_ranks("gather", 3, tmp_path)  # shares of 3, 0 and 2 samples
    for got in three:
        assert torch.equal(got["x"], one["x"]) and torch.equal(got["y"], one["y"])
        assert got["metrics"] == one["metrics"] and got["metrics"]["eval_images"] == 5
        assert got["knn"] == one["knn"]
