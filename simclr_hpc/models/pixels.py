"""The raw-pixel "encoder" of the pixel baseline: the flattened, normalised image itself as the feature vector.

A linear probe on it is the classic baseline every representation must beat: on MNIST it reaches about 90 %, so an
encoder whose probe stays below it has learned nothing a linear classifier could not read off the pixels.
"""

from __future__ import annotations

import torch
from torch import nn


class PixelEncoder(nn.Module):
    """``forward(x) -> x.flatten(1)``: (B, C, S, S) images to (B, C*S*S) features; no parameters."""

    def __init__(self, image_size: int, channels: int = 3):
        super().__init__()
        self.feat_dim = channels * image_size * image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
