"""Image bytes to uint8 [3, H, W] tensors, decoding a JPEG no larger than the crops that will be taken from it need.

JPEG decode dominates the input pipeline at 224 px. The transforms draw their crop boxes from the header's size first
(``open_image`` reads only the header); ``decode_for_boxes`` then decodes at 1/2, 1/4 or 1/8 scale (PIL ``draft``)
whenever every box still has at least ``size`` pixels a side, so no view is upsampled more than it would have been
from the full decode.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch

from simclr_hpc.data.limits import opened, to_uint8


def open_image(data: bytes):
    """A lazily decoded PIL image from encoded bytes (header read only; the transforms decide the decode scale)."""
    from PIL import Image

    return opened(Image.open(io.BytesIO(data)))  # a header claiming a bomb's size: ImageTooLarge, before decoding


def decoded_pixels(data: bytes) -> np.ndarray:
    """Encoded bytes fully decoded to a read-only uint8 HWC (or HW, grayscale) array, in the mode ``to_uint8_chw``
    would have converted the image to: the same pixels the transforms see, for keeping decoded images in memory."""
    arr = np.array(_pixels(open_image(data)))
    arr.flags.writeable = False  # kept in a memo and shared by every later read: nobody may change it in place
    return arr


def to_uint8_chw(img) -> torch.Tensor:
    """A PIL image, uint8 HWC array or uint8 CHW tensor as a uint8 [3, H, W] tensor (grayscale expanded to 3 channels)."""
    if isinstance(img, torch.Tensor):
        t = img if img.ndim == 3 else img.unsqueeze(0)
    else:
        if not isinstance(img, np.ndarray):
            img = _pixels(img)
        arr = img if img.ndim == 3 else img[..., None]
        t = torch.from_numpy(np.array(arr, copy=not arr.flags.writeable)).permute(
            2, 0, 1
        )  # channels-last strides: torch's fast path
    if t.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image, got {t.dtype}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t


def _pixels(img) -> np.ndarray:
    """A PIL image's pixels as uint8 HWC (RGB) or HW (grayscale); other modes are converted (``limits``)."""
    return to_uint8(img)


def image_hw(img) -> tuple[int, int]:
    """``(height, width)`` of a PIL image (from its header), HWC array or CHW tensor, without decoding it."""
    if isinstance(img, torch.Tensor):
        return int(img.shape[-2]), int(img.shape[-1])
    if isinstance(img, np.ndarray):
        return int(img.shape[0]), int(img.shape[1])
    return img.height, img.width


def decode_for_boxes(img, boxes: list[tuple[int, int, int, int]], size: int):
    """Decode ``img`` and return ``(uint8 [3, h, w] tensor, boxes scaled to it)``.

    For a lazily opened JPEG the decode uses the largest DCT reduction (1/2, 1/4, 1/8) that keeps every box at least
    ``size`` pixels a side; other inputs are converted as they are.
    """
    height, width = image_hw(img)
    if not isinstance(img, (torch.Tensor, np.ndarray)) and getattr(img, "format", None) == "JPEG":
        smallest = min(min(h, w) for _, _, h, w in boxes)
        reduce = 1
        while reduce < 8 and smallest / (reduce * 2) >= size:
            reduce *= 2
        if reduce > 1:
            img.draft(
                img.mode if img.mode in ("RGB", "L") else "RGB", (math.ceil(width / reduce), math.ceil(height / reduce))
            )
    t = to_uint8_chw(img)
    h2, w2 = int(t.shape[1]), int(t.shape[2])
    if (h2, w2) == (height, width):
        return t, boxes
    sy, sx = h2 / height, w2 / width
    scaled = []
    for top, left, h, w in boxes:
        top2, left2 = min(int(top * sy), h2 - 1), min(int(left * sx), w2 - 1)
        scaled.append((top2, left2, max(1, min(round(h * sy), h2 - top2)), max(1, min(round(w * sx), w2 - left2))))
    return t, scaled
