"""The weighted kNN classifier against a loop-over-pairs reference and against lightly's knn_predict."""

import math

import pytest
import torch

from simclr_hpc.train.knn import knn_accuracy, knn_scores, ranked_classes


def _reference_ranking(query, bank, bank_labels, num_classes, k, temperature):
    """One query at a time in plain Python: cosine to every bank image, k best, exp(s/T) votes, stable class order."""
    ranked = []
    for q in query.tolist():
        qn = math.sqrt(sum(v * v for v in q))
        sims = []
        for j, b in enumerate(bank.tolist()):
            bn = math.sqrt(sum(v * v for v in b))
            sims.append((sum(x * y for x, y in zip(q, b)) / (qn * bn), j))
        sims.sort(key=lambda t: -t[0])
        scores = [0.0] * num_classes
        for s, j in sims[: min(k, len(sims))]:
            scores[int(bank_labels[j])] += math.exp(s / temperature)
        ranked.append(sorted(range(num_classes), key=lambda c: (-scores[c], c)))
    return ranked


@pytest.mark.parametrize("k,num_classes,temperature", [(1, 3, 0.07), (5, 4, 0.07), (20, 7, 0.07), (200, 10, 0.5)])
def test_knn_ranking_equals_a_brute_force_loop(k, num_classes, temperature):
    gen = torch.Generator().manual_seed(k)
    bank, query = torch.randn(60, 8, generator=gen), torch.randn(25, 8, generator=gen)
    labels = torch.randint(0, num_classes, (60,), generator=gen)
    got = ranked_classes(knn_scores(query, bank, labels, num_classes, k, temperature, chunk_size=7)).tolist()
    assert got == _reference_ranking(query, bank, labels, num_classes, k, temperature)


def test_knn_accuracy_top1_and_top5_equal_the_reference_counts():
    gen = torch.Generator().manual_seed(3)
    num_classes, k = 8, 20
    bank, query = torch.randn(80, 6, generator=gen), torch.randn(40, 6, generator=gen)
    bank_y, query_y = (
        torch.randint(0, num_classes, (80,), generator=gen),
        torch.randint(0, num_classes, (40,), generator=gen),
    )
    ranked = _reference_ranking(query, bank, bank_y, num_classes, k, 0.07)
    top1 = sum(r[0] == y for r, y in zip(ranked, query_y.tolist())) / 40
    top5 = sum(y in r[:5] for r, y in zip(ranked, query_y.tolist())) / 40
    got = knn_accuracy(query, query_y, bank, bank_y, num_classes, ks=(k,), chunk_size=16)
    assert got["knn_top1_k20"] == pytest.approx(top1) and got["knn_top5_k20"] == pytest.approx(top5)
    assert got["knn_bank_images"] == 80 and got["knn_eval_images"] == 40


def test_knn_reports_no_top5_with_five_classes_or_fewer():
    x, y = torch.randn(10, 4), torch.arange(10) % 5
    assert set(knn_accuracy(x, y, x, y, 5, ks=(3,))) == {"knn_top1_k3", "knn_bank_images", "knn_eval_images"}


def test_knn_on_separated_clusters_is_perfect_and_scale_invariant():
    centres = torch.eye(4) * 10
    bank = centres.repeat_interleave(5, 0) + 0.1 * torch.randn(20, 4)
    labels = torch.arange(4).repeat_interleave(5)
    query = 7.0 * (centres + 0.1 * torch.randn(4, 4))  # scaled: cosine similarity ignores the norm
    assert knn_accuracy(query, torch.arange(4), bank, labels, 4, ks=(5, 200))["knn_top1_k5"] == 1.0


def test_knn_top1_agrees_with_lightly_knn_predict():
    benchmarking = pytest.importorskip("lightly.utils.benchmarking")
    gen = torch.Generator().manual_seed(11)
    bank, query = torch.randn(200, 16, generator=gen), torch.randn(50, 16, generator=gen)
    labels = torch.randint(0, 6, (200,), generator=gen)
    theirs = benchmarking.knn_predict(
        torch.nn.functional.normalize(query, dim=1),
        torch.nn.functional.normalize(bank, dim=1).T,
        labels,
        6,
        knn_k=20,
        knn_t=0.07,
    )
    ours = ranked_classes(knn_scores(query, bank, labels, 6, 20, 0.07))
    assert torch.equal(ours[:, 0], theirs[:, 0])
