"""The raw-pixel "encoder" of the pixel baseline: the flattened, normalised image itself as the feature vector.

A linear probe on it is the classic baseline every representation must beat: on MNIST it reaches about 90 %, so an
encoder whose probe stays below it has learned nothing a linear classifier could not read off the pixels.

The loaders give every backbone three channels, copying a grayscale image's one channel into all three; the pixel
encoder keeps the image's own channels (``channels`` from ``index.json``): three copies of a pixel add nothing a linear
probe could use, and would triple its cost.
"""

from __future__ import annotations

import torch
from torch import nn


class PixelEncoder(nn.Module):
    """``forward(x) -> x[:, :channels].flatten(1)``: (B, 3, S, S) images to (B, channels*S*S) features; no parameters."""

    def __init__(self, image_size: int, channels: int = 3):
        super().__init__()
        self.channels = channels
        self.feat_dim = channels * image_size * image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.channels].flatten(1)
