"""Named columns of the packed per-view augmentation parameters that loader workers send with each image.

Workers draw every random choice of a view (crop box, flip, blur sigma, colour map) and send them as one float row per
view; the batched pixel work then reads them by name: ``VIEW.get(p, "box")``, not ``p[:, 0:4]``.
"""

from __future__ import annotations

import numpy as np
import torch


class ParamLayout:
    """Consecutive named column ranges of a parameter row: ``ParamLayout(box=4, flip=1)`` packs ``box`` in 0..3."""

    def __init__(self, **widths: int):
        self.slices: dict[str, slice] = {}
        start = 0
        for name, width in widths.items():
            self.slices[name] = slice(start, start + width)
            start += width
        self.width = start

    def pack(self, **values) -> np.ndarray:
        """One float64 row from a value per column range (scalars or arrays of the range's width), in layout order."""
        if values.keys() != self.slices.keys():
            raise ValueError(f"parameters {sorted(values)} differ from the layout's {list(self.slices)}")
        row = np.concatenate([np.asarray(values[name], dtype=np.float64).reshape(-1) for name in self.slices])
        if row.shape != (self.width,):
            raise ValueError(f"packed {row.shape[0]} values into a layout of width {self.width}")
        return row

    def get(self, params: torch.Tensor, name: str) -> torch.Tensor:
        """Column range ``name`` of ``params`` ([..., width]): [..., range width]."""
        return params[..., self.slices[name]]

    def scalar(self, params: torch.Tensor, name: str) -> torch.Tensor:
        """A one-column range of ``params`` without its last dimension: [...]."""
        return params[..., self.slices[name].start]


VIEW = ParamLayout(box=4, flip=1, sigma=1, colour=9, offset=3, mean_map=9)
"""``SimCLRBatchViews``: crop box ``(x0, y0, x1, y1)`` in image pixels, flip (0/1), blur sigma (0: none), and the
colour map before the crop's mean is known (``colour.colour_affine``): matrix, offset and the mean's 3x3 map."""
DEVICE = ParamLayout(colour=9, offset=3, sigma=1)
"""``SimCLRViews(on_device=True)``: the view's colour matrix (scaled by 1/255) and offset, and its blur sigma."""
