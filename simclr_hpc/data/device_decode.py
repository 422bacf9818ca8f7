"""``data.decode_on_device``: JPEG shards at 224 px decoded and augmented on the training device, in one pass.

At 224 px the CPU's work per image (decode, then crop, flip, colour and blur two views) costs several ms per core, and
GPU nodes have 8-16 cores per GPU. With this path a loader worker only reads the JPEG's bytes and draws each view's
parameters from the header's size (``headers.read_header``: no decoding), the same draws in the same order as
``SimCLRBatchViews``; the training step then decodes the whole batch with ``torchvision.io.decode_jpeg`` on the
device (nvJPEG on a GPU, batched), crops every view with ``roi_align``, and flips, blurs, colours and normalises them
with ``augment.finish_views``: the pixel work of ``SimCLRBatchViews``, for images of any size. On a CPU the same code
runs with CPU tensors (libjpeg-turbo), which is how it is tested here; the views equal ``SimCLRBatchViews``' to the
rounding of two JPEG decoders.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from torchvision.ops import roi_align

from simclr_hpc.data import layout
from simclr_hpc.data.augment import draw_view_params, finish_views
from simclr_hpc.data.headers import read_header


class DeviceDecodeViews:
    """Per image: ``(uint8 [n_bytes] JPEG file, float64 [n_views, 27] view parameters)``; per batch
    (:meth:`collate_views`): the list of files and the stacked parameters; on the device (:meth:`finish`): the views."""

    wants_bytes = True
    """The shard reader hands this transform the image file's bytes, not a decoded image."""

    def __init__(
        self,
        size: int,
        preset: Literal["cifar", "imagenet"] = "imagenet",
        color_strength: float = 1.0,
        n_views: int = 2,
        crop_min_scale: float = 0.08,
        flip: float = 0.5,
    ):
        if preset not in ("cifar", "imagenet"):
            raise ValueError(f"augment preset {preset!r}: use cifar or imagenet")
        self.size, self.preset, self.color_strength, self.n_views = size, preset, color_strength, n_views
        self.scale, self.flip = (crop_min_scale, 1.0), flip

    def __call__(self, data: bytes, rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        header = read_header(data) if isinstance(data, (bytes, bytearray)) else None
        if header is None or header.format != "JPEG":  # a ValueError: the reader reports it as an undecodable sample
            raise ValueError("data.decode_on_device reads JPEG files; this sample is not one")
        params = draw_view_params(rng or random, header.height, header.width, self)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), params

    @staticmethod
    def collate_views(views: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The batch's ``views``: the JPEG files (a list: their lengths differ) and parameters [B, n_views, 27]."""
        return [v[0] for v in views], torch.stack([v[1] for v in views])

    def finish(
        self, views: tuple[list[torch.Tensor], torch.Tensor], device: torch.device | str
    ) -> tuple[torch.Tensor, ...]:
        """Decode the batch on ``device`` and make its ``n_views`` float [B, 3, S, S] views there."""
        from torchvision.io import ImageReadMode, decode_jpeg

        files, params = views
        images = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)  # files stay on the CPU: nvJPEG reads them
        b, v = params.shape[:2]
        p = params.to(device).reshape(b * v, -1).float()
        boxes = layout.VIEW.get(p, "box").reshape(b, v, 4)
        owner = torch.zeros(v, 1, device=p.device)
        # One roi_align per image (their sizes differ); the views' pixel work after that is one batched pass.
        crops = torch.cat(
            [
                roi_align(img.unsqueeze(0).float(), torch.cat([owner, boxes[i]], dim=1), self.size, 1.0, 0, True)
                for i, img in enumerate(images)
            ]
        )
        return finish_views(crops, p, v)
