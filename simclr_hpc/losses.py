"""Losses: pure functions of tensors. Collectives are passed in, never looked up.

Notation follows the SimCLR paper (Chen et al. 2020): two views ``x_a, x_b`` of each image give projections
``z_a, z_b``; the NT-Xent loss of a positive pair (i, j) is

    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )

with sim the cosine similarity, summed over both orders of every pair and averaged over the 2N anchors.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]


def nt_xent(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    temperature: float,
    gather: Gather | None = None,
    rank: int = 0,
) -> torch.Tensor:
    """NT-Xent over the global batch.

    Args:
        z_a, z_b: this rank's projections of the two views, ``[n, d]``; row i of each is the same image.
        temperature: tau > 0.
        gather: concatenates ``[n, d]`` from every rank into ``[N, d]`` in rank order, keeping gradients
            (``distributed.all_gather_with_grad``); ``None`` in one process.
        rank: this rank's index, so its anchors find themselves and their positives in the gathered keys.

    Returns:
        Scalar: the mean loss over this rank's 2n anchors. With n equal on every rank, the mean of this over ranks
        (what DDP's gradient averaging computes) is the loss over all 2N anchors, every other image a negative.

    Each rank scores only its own anchors against all 2N keys (a ``[2n, 2N]`` matrix rather than ``[2N, 2N]``).
    """
    n = z_a.shape[0]
    # Normalise once; fold 1/tau into the anchors ([2n, d]) rather than into the larger logits matrix.
    q_a = F.normalize(z_a.float(), dim=1)
    q_b = F.normalize(z_b.float(), dim=1)
    keys_a = gather(q_a) if gather is not None else q_a
    keys_b = gather(q_b) if gather is not None else q_b
    n_global = keys_a.shape[0]
    anchors = torch.cat([q_a, q_b]) / temperature
    keys = torch.cat([keys_a, keys_b])
    logits = anchors @ keys.T  # [2n, 2N]

    local = torch.arange(n, device=z_a.device) + rank * n
    self_cols = torch.cat([local, local + n_global])
    positive_cols = torch.cat([local + n_global, local])
    rows = torch.arange(2 * n, device=z_a.device)
    # An anchor is never its own negative. In-place is safe: matmul's backward does not read its output.
    logits[rows, self_cols] = float("-inf")
    return F.cross_entropy(logits, positive_cols)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton distillation term: KL(softmax(t / tau) || softmax(s / tau)) * tau^2, averaged over the batch.

    The tau^2 factor keeps the gradient scale independent of tau (Hinton et al. 2015), so a label loss can be mixed in
    with a weight that means the same at every temperature. Shapes: ``[B, C]`` each; the teacher carries no gradient.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * temperature**2
