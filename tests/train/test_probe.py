"""Feature standardisation of the linear probe, its folding into the exported Linear, and the pixel encoder."""

import pytest
import torch

from simclr_hpc.models.pixels import PixelEncoder
from simclr_hpc.train.probe import Standardizer, probe_epochs


def test_standardised_features_have_zero_mean_and_unit_std_and_constant_dims_stay_constant():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 6, generator=gen) * torch.tensor([1e-2, 1.0, 50.0, 2.0, 1.0, 1.0]) + 7.0
    feats[:, 4] = 3.0  # a dead feature (or a border pixel): constant on the training set
    std = Standardizer.fit(feats)
    x = std(feats)
    live = [0, 1, 2, 3, 5]
    assert torch.allclose(x[:, live].mean(0), torch.zeros(5), atol=1e-3)
    assert torch.allclose(x[:, live].std(0, unbiased=False), torch.ones(5), atol=1e-3)
    assert std.scale[4] == 1.0 and torch.all(x[:, 4] == 0)


def test_folded_linear_on_raw_features_equals_the_trained_linear_on_standardised_ones():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(64, 10, generator=gen) * 5 + 2
    std = Standardizer.fit(feats)
    linear = torch.nn.Linear(10, 3)
    folded = std.fold(linear)
    new = torch.randn(20, 10, generator=gen) * 5 + 2
    assert torch.allclose(folded(new), linear(std(new)), atol=1e-4)


def test_probe_epochs_counts_passes_over_the_labelled_set():
    assert probe_epochs(1000, 256, 4000) == pytest.approx(64.0)


def test_pixel_encoder_flattens_the_normalised_image():
    enc = PixelEncoder(16)
    x = torch.randn(5, 3, 16, 16)
    assert enc.feat_dim == 768 and torch.equal(enc(x), x.reshape(5, -1)) and not list(enc.parameters())
