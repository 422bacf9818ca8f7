"""The linear probe: an L2-regularised multinomial logistic regression on frozen features, solved to convergence by
L-BFGS, its penalty chosen on a validation split, never on the split the report scores.

This is the protocol of SimCLR's transfer experiments (Chen et al. 2020, appendix B.5) and of CLIP's linear probes:
features computed once, no augmentation, the softmax cross-entropy plus ``penalty / 2 * ||W||^2`` (the bias is not
penalised) minimised to convergence for each penalty of :data:`PENALTIES`, the one with the best validation top-1 kept.
Every feature type (an encoder, a random-init encoder, raw pixels) makes its own choice, so a baseline is as well
tuned as the method it is compared with.

* **Features are scaled before the penalty sees them** (:class:`Standardizer`): centred, and divided per dimension by
  ``sqrt(var_d + mean_k var_k)``. A dimension with a large variance is standardised; one whose variance is far below
  the average is divided by the average scale instead of being blown up. Plain per-dimension standardisation, fitted
  on 360 labelled MNIST digits, turns a border pixel that is ink in 2 of them into a feature as large as a stroke
  pixel, and cost the pixel baseline 0.6-1.8 points at 10 % of the labels (the demo's shards, seeds 0-2; the figures
  are in ``docs/evaluation.md``). The scaling only reparametrises the penalty: the exported model is the same linear map.
* **The penalty path** runs from the strongest penalty to the weakest, each solve warm-started from the previous
  one, and stops once :data:`PATIENCE` penalties in a row score no better than the best: a few seconds for a 784-pixel probe on
  3,600 images on one CPU core. Ties go to the stronger penalty.
* **Float32, on the features' device, no copy of the feature matrix**: the scaling is applied to the weights
  (``x @ (W / s).T``), never to the features, so the probe holds only its weights and the logits besides them.
* **After the fit**, ``W x' + b`` with ``x' = (h - mu) / s`` is folded into a Linear on raw features:
  ``(W / s) h + (b - (W / s) mu)``. The exported classifier is the plain ``encoder -> head blocks -> Linear`` that
  distillation and later stages load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PENALTIES: tuple[float, ...] = tuple(10.0 ** (-k / 2) for k in range(-2, 13))
"""The penalties tried, 10 down to 1e-6 in half-decade steps (on features of unit average scale, 10 leaves a probe
near chance and 1e-6 is the unregularised fit)."""
PATIENCE = 3
"""The path stops after this many penalties in a row no better than the best validation top-1."""
MAX_ITER = 500
"""L-BFGS iterations per penalty at most (warm-started solves need tens to a few hundred)."""
TOLERANCE_GRAD = 1e-5
"""A solve has converged when no gradient entry of the penalised mean loss exceeds this (float32's resolution of a
loss near 1 is about 1e-7)."""


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension ``mean`` and ``scale`` (both (D,)) of the training features (see the module doc)."""

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor) -> Standardizer:
        """Mean and ``sqrt(var_d + mean var)`` of ``features`` (N, D) over N, in float32 on their device."""
        var, mean = torch.var_mean(features.float(), dim=0, correction=0)
        floor = var.mean() if var.numel() else var.new_zeros(())
        scale = (var + floor).sqrt()
        return cls(mean, torch.where(scale > 0, scale, torch.ones_like(scale)))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale

    def fold(self, linear: nn.Linear) -> nn.Linear:
        """A new Linear on raw features equal to ``linear`` on scaled ones (on ``linear``'s device)."""
        device = linear.weight.device
        weight = linear.weight.detach() / self.scale.to(device)
        out = nn.Linear(linear.in_features, linear.out_features, device=device)
        with torch.no_grad():
            out.weight.copy_(weight)
            out.bias.copy_(linear.bias.detach() - weight @ self.mean.to(device))
        return out


@dataclass(frozen=True)
class Labelled:
    """Raw features (N, D) and their labels (N,), on one device."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class ProbeFit:
    """A solved probe: its weights on scaled features and how they were chosen (recorded in result.json)."""

    weight: torch.Tensor
    """(C, D), on the scaled features."""
    bias: torch.Tensor
    penalty: float
    """The chosen penalty."""
    select_top1: float
    """Top-1 of the chosen penalty on the images it was chosen on."""
    select_images: int
    passes: int
    """Loss-and-gradient evaluations over the training features, the whole path included."""
    path: tuple[tuple[float, float], ...]
    """(penalty, selection top-1) of every penalty tried, strongest first."""
    converged: bool
    """The chosen solve stopped on a tolerance, not on :data:`MAX_ITER`."""


def logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, std: Standardizer) -> torch.Tensor:
    """``W ((x - mu) / s) + b`` computed as ``x (W / s)^T + (b - (W / s) mu)``: no scaled copy of ``x``."""
    folded = weight / std.scale
    return x @ folded.T + (bias - folded @ std.mean)


def solve(
    data: Labelled,
    num_classes: int,
    std: Standardizer,
    penalty: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
    """``(weight, bias, passes, converged)`` minimising ``mean CE + penalty / 2 * ||W||^2`` by L-BFGS (strong Wolfe
    line search) from ``init`` (zeros if None), in float32 on ``data.x``'s device. Converged: stopped by a tolerance
    (gradient, or a loss that no longer changes in float32), not by :data:`MAX_ITER`."""
    dim, device = data.x.shape[1], data.x.device
    w0, b0 = (
        init
        if init is not None
        else (torch.zeros(num_classes, dim, device=device), torch.zeros(num_classes, device=device))
    )
    weight, bias = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=MAX_ITER,
        history_size=10,
        tolerance_grad=TOLERANCE_GRAD,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )
    passes = 0

    def closure() -> torch.Tensor:
        nonlocal passes
        passes += 1
        opt.zero_grad()
        loss = F.cross_entropy(logits(data.x, weight, bias, std), data.y) + 0.5 * penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    budget_spent = opt.state[weight]["n_iter"] >= MAX_ITER or passes >= opt.defaults["max_eval"]
    return weight.detach(), bias.detach(), passes, not budget_spent


def top1(data: Labelled, weight: torch.Tensor, bias: torch.Tensor, std: Standardizer) -> float:
    with torch.no_grad():
        return float((logits(data.x, weight, bias, std).argmax(1) == data.y).float().mean())


def choose_penalty(
    train: Labelled, held_out: Labelled, num_classes: int, std: Standardizer, penalties: tuple[float, ...] = PENALTIES
) -> ProbeFit:
    """The probe on ``train`` whose penalty (of ``penalties``, strongest first) scores best on ``held_out`` (see the
    module doc for the path)."""
    init, best, path, passes = None, None, [], 0
    below = 0
    for penalty in penalties:
        weight, bias, n, converged = solve(train, num_classes, std, penalty, init)
        init, passes = (weight, bias), passes + n
        score = top1(held_out, weight, bias, std)
        path.append((penalty, score))
        if best is None or score > best[0]:
            best, below = (score, penalty, weight, bias, converged), 0
        else:
            below += 1
            if below >= PATIENCE:
                break
    score, penalty, weight, bias, converged = best
    return ProbeFit(weight, bias, penalty, score, len(held_out.y), passes, tuple(path), converged)


def fit_probe(
    train: Labelled,
    val: Labelled | None,
    num_classes: int,
    std: Standardizer,
    holdout: torch.Tensor | None = None,
    penalties: tuple[float, ...] = PENALTIES,
) -> ProbeFit:
    """The linear probe on ``train`` with its penalty chosen on ``val``; without a validation split, chosen on the
    ``holdout`` positions of ``train`` (fitted on the rest), then refitted on all of ``train`` at that penalty."""
    if val is not None:
        return choose_penalty(train, val, num_classes, std, penalties)
    # Only this fallback copies features (the rest of the labelled set, once): shards with a val split never do.
    keep = torch.ones(len(train.y), dtype=torch.bool, device=train.y.device)
    keep[holdout] = False
    part = Labelled(train.x[keep], train.y[keep])
    chosen = choose_penalty(part, Labelled(train.x[~keep], train.y[~keep]), num_classes, std, penalties)
    weight, bias, n, converged = solve(train, num_classes, std, chosen.penalty, (chosen.weight, chosen.bias))
    return ProbeFit(
        weight,
        bias,
        chosen.penalty,
        chosen.select_top1,
        chosen.select_images,
        chosen.passes + n,
        chosen.path,
        converged,
    )


def train_loss(data: Labelled, fit: ProbeFit, std: Standardizer) -> float:
    """Mean cross-entropy (without the penalty) of the probe on ``data``."""
    with torch.no_grad():
        return float(F.cross_entropy(logits(data.x, fit.weight, fit.bias, std), data.y))
