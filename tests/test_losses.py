"""NT-Xent against a loop-over-pairs reference and against lightly's NTXentLoss; the distillation KL."""

import math

import pytest
import torch
import torch.nn.functional as F

from simclr_hpc.losses import distill_kl, nt_xent


def nt_xent_reference(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> torch.Tensor:
    """Equation (1) of SimCLR written as loops: l(i, j) for both orders of every positive pair, averaged over 2N."""
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        numerator = torch.exp(z[i] @ z[j] / tau)
        denominator = sum(torch.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total = total - torch.log(numerator / denominator)
    return total / n2


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.5), (5, 8, 0.1), (8, 16, 1.0), (16, 4, 0.07)])
def test_nt_xent_matches_loop_over_pairs_values_and_gradients(n, d, tau):
    gen = torch.Generator().manual_seed(n * 100 + d)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    b = torch.randn(n, d, generator=gen, dtype=torch.float64)
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    ours = nt_xent(a1, b1, tau)
    ref = nt_xent_reference(a2, b2, tau)
    ours.backward()
    ref.backward()
    # ours computes in float32 (as in training); the reference in float64
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n,tau", [(4, 0.5), (32, 0.1), (128, 0.2)])
def test_nt_xent_equals_lightly_ntxentloss(n, tau):
    lightly_loss = pytest.importorskip("lightly.loss").NTXentLoss
    gen = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, 32, generator=gen), torch.randn(n, 32, generator=gen)
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    ours = nt_xent(a1, b1, tau)
    theirs = lightly_loss(temperature=tau)(a2, b2)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-4, atol=1e-6)


def test_nt_xent_perfect_pairs_beat_random_pairs():
    a = torch.randn(16, 8)
    assert nt_xent(a, a.clone(), 0.1) < nt_xent(a, torch.randn(16, 8), 0.1)


def test_nt_xent_identical_embeddings_give_log_of_negatives():
    # All 2N vectors equal: every logit is 1/tau, so the loss is log(2N - 1).
    z = torch.ones(4, 3)
    assert nt_xent(z, z.clone(), 0.5).item() == pytest.approx(math.log(7), rel=1e-5)


def test_distill_kl_zero_for_equal_logits_and_scaled_by_tau_squared():
    logits = torch.randn(6, 5)
    assert distill_kl(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    p_t = F.softmax(t / 3.0, 1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / 3.0, 1))).sum(1).mean() * 9.0
    assert distill_kl(s, t, 3.0).item() == pytest.approx(manual.item(), rel=1e-5)


def test_distill_kl_sends_no_gradient_to_the_teacher():
    s, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    distill_kl(s, t, 1.0).backward()
    assert s.grad is not None and t.grad is None
