"""Contrastive properties of an embedding: pure functions of two views' embeddings, for monitoring and the report.

``z_a``, ``z_b``: (N, D) embeddings of two augmented views of the same N images (row i of each is a positive pair).
Every function L2-normalises first, as NT-Xent does, so only directions count.

* **alignment** (Wang & Isola 2020, eq. 3): ``E_i ||f(x_i) - f(y_i)||^alpha``, alpha = 2: 0 when positives coincide,
  4 when they are antipodal. Lower is better.
* **uniformity** (eq. 4): ``log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)``, t = 2, over distinct images of one view,
  averaged over the two views: 0 for a collapsed embedding (log 1); about -2t = -4 for an even spread on a
  high-dimensional sphere, where every squared distance concentrates at 2 (and that is about its minimum). Lower is better.
* **std** (as in SimSiam, Chen & He 2021, section 4.1): the standard deviation over images of each coordinate of the
  normalised embedding, averaged over coordinates. Collapse shows as 0; an isotropic spread gives about ``1/sqrt(D)``.
* **positive rank-1**: among the 2N - 1 other embeddings, how often a view's nearest (cosine) is its positive, over all
  2N views: the retrieval accuracy of the NT-Xent task itself (chance about 1 / (2N - 1)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alignment(z_a: torch.Tensor, z_b: torch.Tensor, alpha: float = 2.0) -> float:
    """``E ||f(x) - f(y)||_2^alpha`` over positive pairs (rows of ``z_a``, ``z_b``), on normalised embeddings."""
    a, b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """``log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)`` over the distinct pairs of rows of ``z`` (N >= 2), normalised."""
    x = F.normalize(z.float(), dim=1)
    sq_dist = torch.pdist(x, p=2).pow(2)
    # log-mean-exp, stable when every exponent is very negative: log(sum exp) - log(count)
    return float(torch.logsumexp(-t * sq_dist, dim=0) - torch.log(torch.tensor(float(sq_dist.numel()))))


def embedding_std(z: torch.Tensor) -> float:
    """Std over rows of each coordinate of the normalised ``z`` (sample std, N - 1), averaged over the D coordinates."""
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())


def positive_rank1(z_a: torch.Tensor, z_b: torch.Tensor) -> float:
    """Fraction of the 2N views whose most similar other view (cosine, self excluded) is their positive."""
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    n = z_a.shape[0]
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    # On the embeddings' device: compared with ``sim.argmax`` below, a CPU index would fail on a GPU.
    positive = torch.cat([torch.arange(n, 2 * n, device=z.device), torch.arange(0, n, device=z.device)])
    return float((sim.argmax(dim=1) == positive).float().mean())


def contrastive_properties(z_a: torch.Tensor, z_b: torch.Tensor, suffix: str = "") -> dict:
    """All four properties of a batch of positive pairs, as the metric names ``metrics.jsonl`` and results use
    (``suffix`` "_h" names those of the encoder output ``h``; none, those of the projection ``z``)."""
    return {
        f"alignment{suffix}": alignment(z_a, z_b),
        f"uniformity{suffix}": (uniformity(z_a) + uniformity(z_b)) / 2,
        f"embed_std{suffix}": (embedding_std(z_a) + embedding_std(z_b)) / 2,
        f"positive_rank1{suffix}": positive_rank1(z_a, z_b),
    }
