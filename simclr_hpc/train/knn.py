"""Weighted k-nearest-neighbour classification of frozen features: the kNN protocol of self-supervised learning.

As in InstDisc (Wu et al. 2018, section 3.4), and as solo-learn and lightly implement it: features are L2-normalised,
similarity is cosine ``s_ij = <q_i, b_j>``, the k most similar bank images vote for their labels with weight
``exp(s_ij / T)``, and a class's score is the sum of its votes:

    score_i(c) = sum_{j in top-k(i)} exp(s_ij / T) * [y_j = c]

The prediction ranks classes by score; ties go to the lower class index (a stable sort), so results are reproducible.
T = 0.07 is InstDisc's and solo-learn's temperature (lightly's default is 0.1). Queries are processed in chunks sized
to the bank (``SIMILARITY_BYTES`` of similarities at a time) on the bank's device, so memory is the bank plus one chunk
however large the test set is; ``knn_hits`` returns counts, which ranks holding shares of the queries sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KNN_KS = (20, 200)
"""Neighbour counts reported for every encoder (InstDisc and solo-learn report k = 200; k = 20 suits small banks)."""
KNN_TEMPERATURE = 0.07
"""Vote temperature T of ``exp(s / T)``."""


SIMILARITY_BYTES = 2**28
"""Memory of one chunk of query-to-bank similarities (about 256 MB): the chunk size adapts to the bank's size."""


def _chunk(chunk_size: int | None, bank_size: int) -> int:
    return chunk_size or max(1, SIMILARITY_BYTES // (4 * max(1, bank_size)))


def knn_scores(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float = KNN_TEMPERATURE,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Class scores ``score_i(c)`` of each query, shape (Q, C), from the k nearest of the bank, on the bank's device.

    ``query``: (Q, D) and ``bank``: (N, D) features (normalised here); ``bank_labels``: (N,) ints in [0, C).
    ``k`` is capped at N, so a bank smaller than k uses every image. Queries go in chunks of ``chunk_size`` (None:
    as many as keep one chunk's similarities near ``SIMILARITY_BYTES``), moved to the bank's device one by one.
    """
    k = min(k, bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    labels = bank_labels.long().to(bank.device)
    out = []
    step = _chunk(chunk_size, bank.shape[0])
    for start in range(0, query.shape[0], step):
        q = F.normalize(query[start : start + step].to(bank.device).float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = (sim / temperature).exp()
        scores = torch.zeros(q.shape[0], num_classes, dtype=votes.dtype, device=votes.device)
        out.append(scores.scatter_add_(1, labels[idx], votes))
    return torch.cat(out) if out else torch.zeros(0, num_classes, device=bank.device)


def ranked_classes(scores: torch.Tensor) -> torch.Tensor:
    """Classes by decreasing score, ties to the lower class index: (Q, C) -> (Q, C) class indices."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def knn_hits(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    ks: tuple[int, ...] = KNN_KS,
    temperature: float = KNN_TEMPERATURE,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Top-1 and top-5 hits of the queries for each k in ``ks``: float64 [len(ks), 2] on the CPU, to be summed over
    ranks when each rank holds a share of the queries. The bank goes to ``device`` once (None: where it is), the
    queries chunk by chunk; only the counts come back."""
    bank = bank.to(device) if device is not None else bank
    y = query_labels.long().to(bank.device)
    hits = torch.zeros(len(ks), 2, dtype=torch.float64)
    for i, k in enumerate(ks):
        step = _chunk(chunk_size, bank.shape[0])
        for start in range(0, query.shape[0], step):
            scores = knn_scores(query[start : start + step], bank, bank_labels, num_classes, k, temperature, step)
            ranked = ranked_classes(scores)[:, :5] == y[start : start + step, None]
            hits[i, 0] += float(ranked[:, 0].sum())
            hits[i, 1] += float(ranked.any(dim=1).sum())
    return hits


def knn_metrics(hits: torch.Tensor, n_query: int, n_bank: int, num_classes: int, ks: tuple[int, ...] = KNN_KS) -> dict:
    """``knn_top1_k<k>``, ``knn_top5_k<k>`` (more than 5 classes only), ``knn_bank_images``, ``knn_eval_images``
    from :func:`knn_hits` (summed over the ranks' queries)."""
    out: dict = {"knn_bank_images": int(n_bank), "knn_eval_images": int(n_query)}
    n = max(1, n_query)
    for i, k in enumerate(ks):
        out[f"knn_top1_k{k}"] = float(hits[i, 0]) / n
        if num_classes > 5:
            out[f"knn_top5_k{k}"] = float(hits[i, 1]) / n
    return out


def knn_accuracy(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    ks: tuple[int, ...] = KNN_KS,
    temperature: float = KNN_TEMPERATURE,
    chunk_size: int | None = None,
) -> dict:
    """kNN top-1 (and top-5 when there are more than 5 classes) of the queries for each k in ``ks``, as fractions.

    Keys: ``knn_top1_k<k>``, ``knn_top5_k<k>`` (C > 5 only), ``knn_bank_images`` and ``knn_eval_images``.
    """
    hits = knn_hits(query, query_labels, bank, bank_labels, num_classes, ks, temperature, chunk_size)
    return knn_metrics(hits, query.shape[0], bank.shape[0], num_classes, ks)
