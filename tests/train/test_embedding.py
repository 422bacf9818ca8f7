"""Alignment, uniformity, std and positive rank-1 against their formulas on hand-made embeddings."""

import math

import pytest
import torch

from simclr_hpc.train.embedding import alignment, contrastive_properties, embedding_std, positive_rank1, uniformity


def test_alignment_is_the_mean_squared_distance_of_normalised_positives():
    z_a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    z_b = torch.tensor([[1.0, 0.0], [0.0, -5.0], [0.0, 1.0]])  # same, antipodal, orthogonal: 0, 4, 2
    assert alignment(z_a, z_b) == pytest.approx((0 + 4 + 2) / 3)
    assert alignment(z_a, z_b, alpha=1.0) == pytest.approx((0 + 2 + math.sqrt(2)) / 3)
    assert alignment(z_a, 4 * z_a) == pytest.approx(0.0, abs=1e-7)


def test_uniformity_equals_log_mean_exp_over_distinct_pairs():
    z = torch.eye(3)  # orthonormal: every squared distance is 2
    assert uniformity(z) == pytest.approx(-4.0)
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # squared distances 4, 2, 2
    assert uniformity(z, t=2.0) == pytest.approx(math.log((math.exp(-8) + 2 * math.exp(-4)) / 3))
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(30, 5, generator=gen), dim=1)
    pairs = [(i, j) for i in range(30) for j in range(i + 1, 30)]
    brute = math.log(sum(math.exp(-2 * float((x[i] - x[j]).pow(2).sum())) for i, j in pairs) / len(pairs))
    assert uniformity(x) == pytest.approx(brute, rel=1e-5)


def test_collapsed_embeddings_have_uniformity_zero_std_zero_and_perfect_alignment():
    z = torch.tensor([[0.3, -1.2, 2.0]]).repeat(16, 1) * torch.arange(1, 17.0)[:, None]  # one direction, any length
    props = contrastive_properties(z, z.flip(0))
    assert props["uniformity"] == pytest.approx(0.0, abs=1e-6)
    assert props["embed_std"] == pytest.approx(0.0, abs=1e-6)
    assert props["alignment"] == pytest.approx(0.0, abs=1e-6)


def test_std_of_an_even_spread_is_about_one_over_sqrt_d():
    d = 64
    z = torch.randn(4000, d, generator=torch.Generator().manual_seed(1))
    assert embedding_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.03)
    signs = torch.tensor([[1.0], [-1.0]]).repeat(50, 1)  # +e1 / -e1 half and half: std of coord 1 ~ 1, others 0
    assert embedding_std(signs * torch.eye(4)[0]) == pytest.approx(math.sqrt(100 / 99) / 4)


def test_positive_rank1_counts_views_whose_nearest_other_view_is_their_positive():
    z_a = torch.eye(4)
    assert positive_rank1(z_a, z_a + 0.01) == 1.0  # every positive is its view's nearest
    z_b = torch.eye(4)[[1, 0, 2, 3]]  # images 0 and 1 swapped: their views' nearest is the other image's view
    assert positive_rank1(z_a, z_b) == pytest.approx(4 / 8)
