"""The linear probe's feature standardisation, folded into the classifier so the exported model needs no extra layer.

Frozen features ``h`` (N, D) are standardised with the labelled training set's per-dimension mean ``mu`` and std
``sigma`` before the linear layer is trained: ``x = (h - mu) / sigma``. One learning rate then fits any encoder, or
raw pixels, whatever the scale of its features. A dimension that is constant on the training set keeps scale 1
(as scikit-learn's StandardScaler does), so it stays constant instead of being blown up.

After training, ``W x + b = (W / sigma) h + (b - W (mu / sigma))``: the folded layer takes the raw features, so the
exported classifier is the plain ``encoder -> head blocks -> Linear`` that distillation and later stages load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CONSTANT_STD = 1e-6
"""A training-set std at or below this (relative to the largest one) marks a constant dimension."""


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension ``mean`` and ``scale`` (both (D,)) of the training features."""

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor) -> "Standardizer":
        """Mean and population std of ``features`` (N, D) over N; constant dimensions get scale 1."""
        feats = features.double()
        std = feats.std(dim=0, unbiased=False)
        floor = CONSTANT_STD * max(float(std.max()), 1e-30) if std.numel() else 0.0
        scale = torch.where(std > floor, std, torch.ones_like(std))
        return cls(feats.mean(dim=0).float(), scale.float())

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale

    def fold(self, linear: nn.Linear) -> nn.Linear:
        """A new Linear on raw features equal to ``linear`` on standardised ones (on ``linear``'s device)."""
        device = linear.weight.device
        weight = linear.weight.detach() / self.scale.to(device)
        out = nn.Linear(linear.in_features, linear.out_features, device=device)
        with torch.no_grad():
            out.weight.copy_(weight)
            out.bias.copy_(linear.bias.detach() - weight @ self.mean.to(device))
        return out


def probe_epochs(steps: int, global_batch: int, train_images: int) -> float:
    """Passes over the labelled set that ``steps`` batches of ``global_batch`` features make (batches draw with
    replacement, so this is the expected number of times each image is seen)."""
    return steps * global_batch / max(1, train_images)
