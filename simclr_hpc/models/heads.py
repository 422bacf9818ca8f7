"""Projection head (SimCLRv2 style, configurable depth) and the classifiers built on an encoder.

Head layer k means "the output after the first k blocks of the projection head": 0 is the encoder output h, and
``proj_layers`` is z. SimCLRv2 fine-tunes from the middle of a 3-layer head (k=1); the paper we follow studies k.
"""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """``layers`` blocks of Linear -> BatchNorm -> ReLU, the last without ReLU (and BN without affine, as SimCLRv2)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int):
        super().__init__()
        blocks = []
        dim = in_dim
        for i in range(layers):
            last = i == layers - 1
            width = out_dim if last else hidden_dim
            parts = [nn.Linear(dim, width, bias=False), nn.BatchNorm1d(width, affine=not last)]
            if not last:
                parts.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*parts))
            dim = width
        self.blocks = nn.ModuleList(blocks)

    def out_dim_at(self, layer: int) -> int:
        """Width of the output after ``layer`` blocks (``layer`` >= 1)."""
        return self.blocks[layer - 1][0].out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h)
        return h


class SimCLRModel(nn.Module):
    """Encoder f and projection head g: ``forward(x) -> z = g(f(x))``."""

    def __init__(self, encoder: nn.Module, head: ProjectionHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class Classifier(nn.Module):
    """Encoder, the first k projection-head blocks, and a linear layer to ``num_classes`` logits."""

    def __init__(self, encoder: nn.Module, head_blocks: nn.ModuleList | list, feat_dim: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head_blocks = nn.ModuleList(head_blocks)
        self.linear = nn.Linear(feat_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        for block in self.head_blocks:
            h = block(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def head_hidden_dim(proj_hidden_dim: int, feat_dim: int) -> int:
    """Hidden width of the projection head: the configured one, or the encoder's feature width when 0."""
    return proj_hidden_dim or feat_dim
