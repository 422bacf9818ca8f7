"""SimCLR augmentations on uint8 CHW tensors, fast enough that two views per image do not starve a GPU.

The recipe is SimCLR's (Chen et al. 2020, appendix A): random resized crop (scale 0.08-1, ratio 3/4-4/3), horizontal
flip (p=0.5, ``data.flip``: 0 for digits), colour jitter (brightness, contrast, saturation 0.8*s, hue 0.2*s, random
order) with p=0.8, grayscale with p=0.2, and for the ``imagenet`` preset Gaussian blur (kernel 10 % of the side, sigma
0.1-2.0) with p=0.5; then normalisation.

Where the time goes, and what we do about it:
- JPEG decode dominates at 224 px: crops are drawn from the header's size first, then the JPEG is decoded at the
  smallest DCT scale that serves them (``decode.decode_for_boxes``).
- Crop and resize run once per view on the uint8 tensor (torch's vectorised antialiased uint8 path).
- Colour jitter, grayscale and normalisation are composed into one affine map per view and applied in a single pass
  (``colour``); the blur is separable (``blur``).
- For images that all have one size (MNIST, CIFAR, generated shapes; ``index.json``'s ``image_size``),
  ``SimCLRBatchViews`` draws every view's crop, flip, blur and colour per image but does the pixel work once per
  batch (``finish_batch``: ``torchvision.ops.roi_align`` crops, one batched colour map): 3-4x cheaper on a CPU core.
- Randomness comes from a ``random.Random`` passed in by the loader (seeded from seed, rank, worker and segment), so a
  resumed run draws the same augmentations; without one, Python's global ``random`` (seeded per DataLoader worker).
"""

from __future__ import annotations

import math
import random
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.ops import roi_align

from simclr_hpc.data import layout
from simclr_hpc.data.blur import blur_channels, blur_kernel_size, gaussian_blur, gaussian_kernels
from simclr_hpc.data.colour import IDENTITY_255, ZERO3, colour_affine, colour_matrix, normalise_affine
from simclr_hpc.data.decode import decode_for_boxes, image_hw, to_uint8_chw


def random_resized_crop_box(
    rng: random.Random, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop, by torchvision's RandomResizedCrop algorithm (10 tries, then centre)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def view_options(data) -> dict:
    """The augmentation settings of a run's ``data`` section (``config.DataSection``) as the keyword arguments that
    ``SimCLRViews``, ``SimCLRBatchViews`` and ``DeviceDecodeViews`` share: one place maps the config to the views."""
    return {
        "preset": data.augment,
        "color_strength": data.color_strength,
        "crop_min_scale": data.crop_min_scale,
        "flip": data.flip,
    }


class SimCLRViews:
    """Two (or ``n_views``) independently augmented views of one image: a tuple of float [3, size, size] tensors.

    ``preset``: ``cifar`` (no blur) or ``imagenet`` (blur p=0.5). ``color_strength``: s (0.5 CIFAR, 1.0 ImageNet).

    ``on_device=True`` splits the work: the loader worker only decodes, crops and flips (uint8), and draws each view's
    colour affine and blur sigma; :func:`finish_on_device` applies them to the whole batch on the training device.
    The views are then ``(uint8 view 1, ..., uint8 view n, params 1, ..., params n)``, params being float [13]
    (:data:`N_PARAMS`). The random draws are the same as in the CPU path, in the same order, so both paths give the
    same views (to float rounding) but for one detail: the contrast's grey level is taken from the crop before the
    blur rather than after it.
    """

    def __init__(
        self,
        size: int,
        preset: Literal["cifar", "imagenet"] = "cifar",
        color_strength: float = 0.5,
        n_views: int = 2,
        crop_min_scale: float = 0.08,
        on_device: bool = False,
        flip: float = 0.5,
    ):
        if preset not in ("cifar", "imagenet"):
            raise ValueError(f"augment preset {preset!r}: use cifar or imagenet")
        self.size, self.preset, self.color_strength, self.n_views = size, preset, color_strength, n_views
        self.scale, self.flip = (crop_min_scale, 1.0), flip
        self.blur_kernel = blur_kernel_size(size)
        self.on_device = on_device

    def __call__(self, img, rng: random.Random | None = None) -> tuple[torch.Tensor, ...]:
        rng = rng or random
        height, width = image_hw(img)
        boxes = [random_resized_crop_box(rng, height, width, scale=self.scale) for _ in range(self.n_views)]
        full, boxes = decode_for_boxes(img, boxes, self.size)
        views, params = [], []
        for top, left, h, w in boxes:
            crop = TF.resized_crop(full, top, left, h, w, [self.size, self.size], antialias=True)
            if rng.random() < self.flip:
                crop = crop.flip(-1)
            sigma = rng.uniform(0.1, 2.0) if self.preset == "imagenet" and rng.random() < 0.5 else 0.0
            if self.on_device:
                mean = crop.float().mean(dim=(1, 2)) / 255.0
                a, t = colour_matrix(rng, self.color_strength, mean.double().numpy())
                views.append(crop)
                params.append(torch.from_numpy(layout.DEVICE.pack(colour=a / 255.0, offset=t, sigma=sigma)).float())
                continue
            x = crop.float()
            if sigma:
                x = gaussian_blur(x, self.blur_kernel, sigma)
            mean = (x.mean(dim=(1, 2)) / 255.0).double().numpy()
            a, t = colour_matrix(rng, self.color_strength, mean)
            views.append(normalise_affine(torch.from_numpy(a / 255.0).float(), torch.from_numpy(t).float(), x))
        return tuple(views + params)


N_PARAMS = layout.DEVICE.width


def finish_on_device(views: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The device half of ``SimCLRViews(on_device=True)`` for a whole batch: blur, colour, clamp and normalisation.

    ``views``: uint8 [B, 3, S, S]; ``params``: float [B, 13] (``layout.DEVICE``) from the workers; both on the device
    that trains. Returns float [B, 3, S, S]. Per-sample blur is one grouped convolution per direction (sigma 0 = no
    blur)."""
    b, cols = views.shape[0], layout.DEVICE
    x = _blur_batch(views.float(), cols.scalar(params, "sigma"))
    return normalise_affine(cols.get(params, "colour").reshape(b, 3, 3), cols.get(params, "offset"), x)


def _blur_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Float [B, C, H, W] blurred image by image with ``sigma`` [B] (0: not blurred); one grouped conv per direction."""
    if not bool((sigma > 0).any()):
        return x
    b, c, h, w = x.shape
    kernel = blur_kernel_size(h)
    g = gaussian_kernels(sigma.clamp_min(1e-6), kernel)
    identity = (torch.arange(kernel, device=x.device) == kernel // 2).float()
    g = torch.where(sigma.unsqueeze(1) > 0, g, identity)  # no blur: a kernel that keeps the pixel
    return blur_channels(x.reshape(b * c, h, w), g.repeat_interleave(c, dim=0)).reshape(b, c, h, w)


class SimCLRBatchViews:
    """``SimCLRViews`` for shards whose images all have one size: the same augmentations, batched.

    Per image (``__call__``) only the random draws are made, the same draws in the same order as ``SimCLRViews``
    (crop boxes, then per view flip, blur sigma, colour); the sample is ``(uint8 [3, H, W] image, float64 [n_views, 27]
    parameters)`` (columns named by ``layout.VIEW``). The batcher stacks the samples and calls :meth:`finish_batch`,
    which makes the views of the whole batch at once: crops by ``roi_align`` (bilinear, averaged over each output
    pixel's footprint when a crop shrinks), flips by index, blur by a grouped convolution, colour and normalisation by
    one batched affine map. Views differ from ``SimCLRViews``' only in interpolation detail: torchvision's antialiased
    resize of a uint8 crop rounds to integers and clamps at the crop's edge, ``roi_align`` does neither.
    """

    def __init__(
        self,
        size: int,
        image_hw: tuple[int, int],
        preset: Literal["cifar", "imagenet"] = "cifar",
        color_strength: float = 0.5,
        n_views: int = 2,
        crop_min_scale: float = 0.08,
        flip: float = 0.5,
    ):
        if preset not in ("cifar", "imagenet"):
            raise ValueError(f"augment preset {preset!r}: use cifar or imagenet")
        self.size, self.image_hw, self.preset, self.n_views = size, tuple(image_hw), preset, n_views
        self.color_strength, self.scale, self.flip = color_strength, (crop_min_scale, 1.0), flip

    def __call__(self, img, rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rng = rng or random
        height, width = image_hw(img)
        if (height, width) != self.image_hw:  # a ValueError: the reader reports it as an undecodable sample
            raise ValueError(
                f"image is {height}x{width}, but index.json says every image is {self.image_hw[0]}x{self.image_hw[1]}"
            )
        return to_uint8_chw(img), draw_view_params(rng, height, width, self)

    def finish_batch(self, images: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 [B, 3, H, W] images and their [B, n_views, 27] parameters -> ``n_views`` float [B, 3, S, S] views."""
        b, v = params.shape[:2]
        p = params.reshape(b * v, -1).float()
        owner = torch.arange(b, dtype=torch.float32).repeat_interleave(v).unsqueeze(1)
        boxes = torch.cat([owner, layout.VIEW.get(p, "box")], dim=1)
        return finish_views(roi_align(images.float(), boxes, self.size, 1.0, 0, True), p, v)


def draw_view_params(rng: random.Random, height: int, width: int, recipe) -> torch.Tensor:
    """Every random choice of ``recipe.n_views`` views of an image of ``height`` x ``width``, float64 [n_views, 27]
    (``layout.VIEW``): the crop boxes first, then per view flip, blur sigma and colour, the order ``SimCLRViews`` draws
    them in (a flip is drawn with probability ``recipe.flip``; the draw is made even at 0, so the other draws do not
    move). ``recipe``: anything with ``n_views``, ``scale``, ``flip``, ``preset`` and ``color_strength``."""
    boxes = [random_resized_crop_box(rng, height, width, scale=recipe.scale) for _ in range(recipe.n_views)]
    params = []
    for top, left, h, w in boxes:
        flip = 1.0 if rng.random() < recipe.flip else 0.0
        sigma = rng.uniform(0.1, 2.0) if recipe.preset == "imagenet" and rng.random() < 0.5 else 0.0
        a, t0, tm = colour_affine(rng, recipe.color_strength)
        params.append(
            layout.VIEW.pack(
                box=(left, top, left + w, top + h), flip=flip, sigma=sigma, colour=a, offset=t0, mean_map=tm
            )
        )
    return torch.from_numpy(np.stack(params))


def finish_views(crops: torch.Tensor, p: torch.Tensor, n_views: int) -> tuple[torch.Tensor, ...]:
    """Flip, blur, colour and normalise float [B * V, 3, S, S] crops (in [0, 255], made by ``roi_align``: aligned
    pixel centres, and with ``sampling_ratio=0`` a crop larger than the output is averaged rather than aliased) with
    their parameters ``p`` [B * V, 27] (``layout.VIEW``): ``n_views`` float [B, 3, S, S] views, on ``crops``' device."""
    cols = layout.VIEW
    x = torch.where(cols.scalar(p, "flip").bool()[:, None, None, None], crops.flip(-1), crops)
    x = _blur_batch(x, cols.scalar(p, "sigma"))
    mean = x.mean(dim=(2, 3)) / 255.0
    a, t0 = cols.get(p, "colour").reshape(-1, 3, 3), cols.get(p, "offset")
    t = t0 + torch.matmul(cols.get(p, "mean_map").reshape(-1, 3, 3), mean.unsqueeze(-1)).squeeze(-1)
    views = normalise_affine(a / 255.0, t, x)
    return tuple(views.reshape(-1, n_views, *views.shape[1:]).unbind(1))


class SupervisedAugment:
    """Random resized crop and horizontal flip (probability ``flip``), normalised: the usual fine-tuning augmentation.
    One float tensor."""

    def __init__(self, size: int, flip: float = 0.5):
        self.size, self.flip = size, flip

    def __call__(self, img, rng: random.Random | None = None) -> torch.Tensor:
        rng = rng or random
        height, width = image_hw(img)
        full, ((top, left, h, w),) = decode_for_boxes(img, [random_resized_crop_box(rng, height, width)], self.size)
        crop = TF.resized_crop(full, top, left, h, w, [self.size, self.size], antialias=True)
        if rng.random() < self.flip:
            crop = crop.flip(-1)
        return normalise_affine(IDENTITY_255, ZERO3, crop.float())


class EvalTransform:
    """Deterministic: resize the shorter side to ``size / crop_fraction`` (only if larger than that), centre-crop
    ``size``, normalise. An image already ``size`` a side is only normalised. One float tensor."""

    def __init__(self, size: int, crop_fraction: float = 0.875):
        self.size, self.crop_fraction = size, crop_fraction
        self.memo_key = ("eval", size, crop_fraction)
        """Deterministic, so ``pipeline.eval_loader`` may keep its output (see there)."""

    def __call__(self, img, rng: random.Random | None = None) -> torch.Tensor:
        height, width = image_hw(img)
        if (height, width) == (self.size, self.size):
            return normalise_affine(IDENTITY_255, ZERO3, to_uint8_chw(img).float())
        short = max(self.size, round(self.size / self.crop_fraction))
        side = min(height, width)
        full, _ = decode_for_boxes(img, [(0, 0, side, side)], short)
        if min(full.shape[1:]) != short:
            full = TF.resize(full, [short], antialias=True)
        crop = TF.center_crop(full, [self.size, self.size])
        return normalise_affine(IDENTITY_255, ZERO3, crop.float())
