"""The linear probe (train/probe.py): feature scaling and its folding into the exported Linear, the L-BFGS solve
against scipy, the penalty chosen on held-out images, float32 without copies of the features; the pixel encoder."""

import numpy as np
import pytest
import torch

from simclr_hpc.models.pixels import PixelEncoder
from simclr_hpc.train.probe import (
    PATIENCE,
    PENALTIES,
    Labelled,
    Standardizer,
    choose_penalty,
    fit_probe,
    solve,
    top1,
)


def test_scaled_features_are_centred_and_divided_by_their_std_shrunk_toward_the_average_one():
    gen = torch.Generator().manual_seed(0)
    spread = torch.tensor([1e-2, 1.0, 50.0, 2.0, 1.0, 1.0])
    feats = torch.randn(500, 6, generator=gen) * spread + 7.0
    feats[:, 4] = 3.0  # a dead feature (or a border pixel): constant on the training set
    std = Standardizer.fit(feats)
    x = std(feats)
    var = feats.double().var(0, unbiased=False)
    assert torch.allclose(std.scale.double(), (var + var.mean()).sqrt(), rtol=1e-4)
    assert torch.allclose(x.mean(0), torch.zeros(6), atol=1e-3)
    # a large-variance dimension ends near unit scale; a tiny one is not blown up to it; a constant one stays 0
    assert 0.9 < float(x[:, 2].std()) < 1.0 and float(x[:, 0].std()) < 1e-3 and torch.all(x[:, 4] == 0)
    assert std.mean.dtype == std.scale.dtype == torch.float32


def test_constant_features_keep_scale_one():
    std = Standardizer.fit(torch.full((10, 3), 2.0))
    assert torch.equal(std.scale, torch.ones(3)) and torch.equal(std(torch.full((2, 3), 2.0)), torch.zeros(2, 3))


def test_folded_linear_on_raw_features_equals_the_trained_linear_on_standardised_ones():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(64, 10, generator=gen) * 5 + 2
    std = Standardizer.fit(feats)
    linear = torch.nn.Linear(10, 3)
    folded = std.fold(linear)
    new = torch.randn(20, 10, generator=gen) * 5 + 2
    assert torch.allclose(folded(new), linear(std(new)), atol=1e-4)


def test_pixel_encoder_flattens_the_normalised_image_in_its_own_channels():
    enc = PixelEncoder(16)
    x = torch.randn(5, 3, 16, 16)
    assert enc.feat_dim == 768 and torch.equal(enc(x), x.reshape(5, -1)) and not list(enc.parameters())
    gray = PixelEncoder(16, channels=1)  # the loaders copy a grayscale image into 3 channels; the probe needs one
    assert gray.feat_dim == 256 and torch.equal(gray(x), x[:, 0].reshape(5, -1))


SHORT_PATH = PENALTIES[2:9]
"""1 down to 1e-3: the path's logic on fewer solves (a tiny separable problem takes the longest at weak penalties)."""


def _problem(n=240, d=12, classes=4, seed=0):
    """Gaussian classes with shifted means, features at very different scales (as encoder features are)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    means = torch.randn(classes, d, generator=gen) * 0.5
    x = (means[y] + torch.randn(n, d, generator=gen)) * torch.logspace(-1, 1, d) + 3.0
    return Labelled(x, y)


def test_solve_reaches_the_float64_scipy_optimum():
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    data, penalty = _problem(), 0.01
    std = Standardizer.fit(data.x)
    weight, bias, passes, converged = solve(data, 4, std, penalty)
    x, y = std(data.x).double().numpy(), data.y.numpy()
    n, d = x.shape

    def objective(p):
        w, b = p[: 4 * d].reshape(4, d), p[4 * d :]
        z = x @ w.T + b
        lse = logsumexp(z, axis=1)
        g = (np.exp(z - lse[:, None]) - np.eye(4)[y]) / n
        loss = (lse - z[np.arange(n), y]).mean() + 0.5 * penalty * (w**2).sum()
        return loss, np.concatenate([(g.T @ x + penalty * w).ravel(), g.sum(0)])

    ref = minimize(objective, np.zeros(4 * d + 4), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    ours = np.concatenate([weight.numpy().ravel(), bias.numpy()])
    assert converged and passes < 200 and ref.success
    assert objective(ours)[0] == pytest.approx(ref.fun, rel=1e-6)
    assert np.abs(ours[: 4 * d] - ref.x[: 4 * d]).max() < 2e-3


def test_the_chosen_penalty_scores_best_on_the_held_out_images_ties_going_to_the_stronger():
    train, val = _problem(seed=1), _problem(n=120, seed=1)  # same class means, fresh noise
    val = Labelled(val.x[1::2], val.y[1::2])
    fit = choose_penalty(train, val, 4, Standardizer.fit(train.x), SHORT_PATH)
    scores = [score for _, score in fit.path]
    first_best = scores.index(max(scores))
    assert fit.penalty == fit.path[first_best][0] == SHORT_PATH[first_best]
    assert fit.select_top1 == max(scores) and fit.select_images == len(val.y)
    # the path went on until PATIENCE penalties in a row scored no better than the best, or it ran out
    assert len(scores) == len(SHORT_PATH) or len(scores) - 1 - first_best == PATIENCE
    assert top1(val, fit.weight, fit.bias, Standardizer.fit(train.x)) == fit.select_top1


def test_without_a_validation_split_the_penalty_is_chosen_on_a_holdout_then_refitted_on_every_image():
    train = _problem(seed=2)
    std = Standardizer.fit(train.x)
    holdout = torch.arange(0, len(train.y), 5)
    fit = fit_probe(train, None, 4, std, holdout=holdout, penalties=SHORT_PATH)
    keep = torch.ones(len(train.y), dtype=torch.bool)
    keep[holdout] = False
    alone = choose_penalty(
        Labelled(train.x[keep], train.y[keep]), Labelled(train.x[holdout], train.y[holdout]), 4, std, SHORT_PATH
    )
    assert fit.penalty == alone.penalty and fit.select_images == len(holdout) and fit.path == alone.path
    cold, _, _, _ = solve(train, 4, std, fit.penalty)  # the refit is the optimum on all images (a convex problem)
    assert torch.allclose(fit.weight, cold, atol=2e-3)


def test_the_probe_makes_no_float64_tensor_and_no_copy_of_the_feature_matrix():
    from torch.utils._python_dispatch import TorchDispatchMode

    train, val = _problem(n=400, d=64, seed=3), _problem(n=100, d=64, seed=4)
    big = train.x.numel()
    seen = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    shares = t.untyped_storage().data_ptr() == train.x.untyped_storage().data_ptr()
                    seen.append((str(func), t.dtype, t.numel(), shares))
            return out

    with Watch():
        fit = fit_probe(train, val, 4, Standardizer.fit(train.x), penalties=SHORT_PATH)
    assert fit.penalty in SHORT_PATH and seen
    assert not [s for s in seen if s[1] == torch.float64]
    assert not [s for s in seen if s[2] >= big and not s[3]], "a copy of the training features was made"


@pytest.mark.gpu
def test_the_probe_solves_on_the_device_of_the_features():
    train, val = _problem(seed=5), _problem(n=120, seed=6)
    cuda = [Labelled(d.x.cuda(), d.y.cuda()) for d in (train, val)]
    fit = fit_probe(cuda[0], cuda[1], 4, Standardizer.fit(cuda[0].x), penalties=SHORT_PATH)
    cpu = fit_probe(train, val, 4, Standardizer.fit(train.x), penalties=SHORT_PATH)
    assert fit.weight.is_cuda and fit.weight.dtype == torch.float32 and fit.penalty == cpu.penalty
