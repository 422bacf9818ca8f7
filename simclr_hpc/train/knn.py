"""Weighted k-nearest-neighbour classification of frozen features: the kNN protocol of self-supervised learning.

As in InstDisc (Wu et al. 2018, section 3.4), and as solo-learn and lightly implement it: features are L2-normalised,
similarity is cosine ``s_ij = <q_i, b_j>``, the k most similar bank images vote for their labels with weight
``exp(s_ij / T)``, and a class's score is the sum of its votes:

    score_i(c) = sum_{j in top-k(i)} exp(s_ij / T) * [y_j = c]

The prediction ranks classes by score; ties go to the lower class index (a stable sort), so results are reproducible.
T = 0.07 is InstDisc's and solo-learn's temperature (lightly's default is 0.1). Queries are processed in chunks, so
memory is ``O(chunk * bank)`` however large the test set is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KNN_KS = (20, 200)
"""Neighbour counts reported for every encoder (InstDisc and solo-learn report k = 200; k = 20 suits small banks)."""
KNN_TEMPERATURE = 0.07
"""Vote temperature T of ``exp(s / T)``."""


def knn_scores(
    query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int,
    temperature: float = KNN_TEMPERATURE, chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores ``score_i(c)`` of each query, shape (Q, C), from the k nearest of the bank.

    ``query``: (Q, D) and ``bank``: (N, D) features (normalised here); ``bank_labels``: (N,) ints in [0, C).
    ``k`` is capped at N, so a bank smaller than k uses every image.
    """
    k = min(k, bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    labels = bank_labels.long().to(bank.device)
    out = []
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[start : start + chunk_size].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = (sim / temperature).exp()
        scores = torch.zeros(q.shape[0], num_classes, dtype=votes.dtype, device=votes.device)
        out.append(scores.scatter_add_(1, labels[idx], votes))
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def ranked_classes(scores: torch.Tensor) -> torch.Tensor:
    """Classes by decreasing score, ties to the lower class index: (Q, C) -> (Q, C) class indices."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def knn_accuracy(
    query: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
    ks: tuple[int, ...] = KNN_KS, temperature: float = KNN_TEMPERATURE, chunk_size: int = 1024,
) -> dict:
    """kNN top-1 (and top-5 when there are more than 5 classes) of the queries for each k in ``ks``, as fractions.

    Keys: ``knn_top1_k<k>``, ``knn_top5_k<k>`` (C > 5 only), ``knn_bank_images`` and ``knn_eval_images``.
    """
    out: dict = {"knn_bank_images": int(bank.shape[0]), "knn_eval_images": int(query.shape[0])}
    y = query_labels.long().to(query.device)
    for k in ks:
        ranked = ranked_classes(knn_scores(query, bank, bank_labels, num_classes, k, temperature, chunk_size))
        hits = ranked == y[:, None]
        n = max(1, len(y))
        out[f"knn_top1_k{k}"] = float(hits[:, 0].sum()) / n
        if num_classes > 5:
            out[f"knn_top5_k{k}"] = float(hits[:, :5].any(dim=1).sum()) / n
    return out
