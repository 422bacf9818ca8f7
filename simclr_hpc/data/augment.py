"""SimCLR augmentations on uint8 CHW tensors, fast enough that two views per image do not starve a GPU.

The recipe is SimCLR's (Chen et al. 2020, appendix A): random resized crop (scale 0.08-1, ratio 3/4-4/3), horizontal
flip, colour jitter (brightness, contrast, saturation 0.8*s, hue 0.2*s, random order) with p=0.8, grayscale with p=0.2,
and for the ``imagenet`` preset Gaussian blur (kernel 10 % of the side, sigma 0.1-2.0) with p=0.5; then normalisation.

Where the time goes, and what we do about it:
- JPEG decode dominates at 224 px. Crops are drawn from the header's size first; the JPEG is then decoded at 1/2, 1/4
  or 1/8 scale (PIL ``draft``) whenever every crop still has at least ``size`` pixels a side, so no view is upsampled
  more than it would have been from the full decode.
- Crop and resize run once per view on the uint8 tensor (torch's vectorised antialiased uint8 path).
- Colour jitter, grayscale and normalisation are all affine maps of the RGB vector, so each view's whole colour chain is
  composed into one 3x3 matrix plus offset and applied in a single pass, clamped to [0, 1] once at the end. Two
  deliberate differences from torchvision's PIL/tensor ``ColorJitter``: no clamping between the four jitter ops, and hue
  is a rotation about the grey axis in YIQ space (a linear hue shift) rather than an HSV round trip.
- Randomness comes from a ``random.Random`` passed in by the loader (seeded from seed, rank, worker and segment), so a
  resumed run draws the same augmentations; without one, Python's global ``random`` (seeded per DataLoader worker).
"""

from __future__ import annotations

import io
import math
import random
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_EYE = np.eye(3)
_GRAY = np.array(GRAY_WEIGHTS)
_TO_GRAY = np.outer(np.ones(3), _GRAY)  # every output channel = luma
_MEAN_T = torch.tensor(MEAN).unsqueeze(1)
_INV_STD_T = torch.tensor([1.0 / s for s in STD]).unsqueeze(1)
_IDENTITY_255 = torch.eye(3) / 255.0
_ZERO3 = torch.zeros(3)


def open_image(data: bytes):
    """A lazily decoded PIL image from encoded bytes (header read only; the transforms decide the decode scale)."""
    from PIL import Image

    return Image.open(io.BytesIO(data))


def to_uint8_chw(img) -> torch.Tensor:
    """A PIL image, uint8 HWC array or uint8 CHW tensor as a uint8 [3, H, W] tensor (grayscale expanded to 3 channels)."""
    if isinstance(img, torch.Tensor):
        t = img if img.ndim == 3 else img.unsqueeze(0)
    else:
        if not isinstance(img, np.ndarray):
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            img = np.asarray(img)
        arr = img if img.ndim == 3 else img[..., None]
        t = torch.from_numpy(np.array(arr, copy=not arr.flags.writeable)).permute(2, 0, 1)  # channels-last strides: torch's fast path
    if t.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image, got {t.dtype}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t


def _image_hw(img) -> tuple[int, int]:
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
    height, width = _image_hw(img)
    if not isinstance(img, (torch.Tensor, np.ndarray)) and getattr(img, "format", None) == "JPEG":
        smallest = min(min(h, w) for _, _, h, w in boxes)
        reduce = 1
        while reduce < 8 and smallest / (reduce * 2) >= size:
            reduce *= 2
        if reduce > 1:
            img.draft(img.mode if img.mode in ("RGB", "L") else "RGB",
                      (math.ceil(width / reduce), math.ceil(height / reduce)))
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


def random_resized_crop_box(rng: random.Random, height: int, width: int, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
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


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of a float [C, H, W] tensor with reflect padding, as two 1-D passes.

    Same result as torchvision's ``gaussian_blur`` (which convolves with the full 2-D kernel) at 2/k of the cost:
    at 224 px with k=23 that is the difference between the blur dominating the pipeline and not.
    """
    g = _gaussian_kernels(torch.tensor([float(sigma)]), kernel)
    return _blur_channels(x, g.expand(x.shape[0], kernel))


def _gaussian_kernels(sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels of odd size ``kernel``, one row per entry of ``sigma`` (> 0): [len(sigma), k]."""
    half = kernel // 2
    offsets = torch.arange(-half, half + 1, dtype=torch.float32, device=sigma.device)
    g = torch.exp(-0.5 * (offsets / sigma.unsqueeze(1)) ** 2)
    return g / g.sum(dim=1, keepdim=True)


def _blur_channels(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable blur of float [N, H, W] with reflect padding, channel i by the 1-D kernel ``g[i]`` ([N, k])."""
    n, kernel = g.shape
    half = kernel // 2
    y = torch.nn.functional.pad(x.unsqueeze(0), (half, half, half, half), mode="reflect")
    y = torch.nn.functional.conv2d(y, g.reshape(n, 1, 1, kernel), groups=n)
    return torch.nn.functional.conv2d(y, g.reshape(n, 1, kernel, 1), groups=n)[0]


def _normalise_affine(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``clamp(a @ rgb + t, 0, 1)`` per pixel, then ImageNet normalisation. ``x``: float [..., 3, H, W] in [0, 255] with
    ``a`` [..., 3, 3] and ``t`` [..., 3]: one image, or a batch with one colour map per image."""
    *lead, c, h, w = x.shape
    y = torch.matmul(a, x.reshape(*lead, c, h * w)).add_(t.unsqueeze(-1)).clamp_(0.0, 1.0)
    return y.sub_(_MEAN_T.to(y.device)).mul_(_INV_STD_T.to(y.device)).reshape(x.shape)


def colour_matrix(rng: random.Random, strength: float, channel_mean: np.ndarray, p_jitter: float = 0.8,
                  p_gray: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``(A, t)`` with ``out = A @ rgb + t`` (rgb in [0, 1]): SimCLR's random colour jitter and grayscale composed.

    ``channel_mean`` (RGB in [0, 1]) of the crop is needed by contrast, which blends towards the current mean grey.
    """
    a, t = _EYE, np.zeros(3)
    w = _GRAY
    if rng.random() < p_jitter:
        s = strength
        factors = {
            "brightness": rng.uniform(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s),
            "contrast": rng.uniform(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s),
            "saturation": rng.uniform(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s),
            "hue": rng.uniform(-min(0.5, 0.2 * s), min(0.5, 0.2 * s)),
        }
        order = list(factors)
        rng.shuffle(order)
        for op in order:
            f = factors[op]
            if op == "brightness":
                a, t = f * a, f * t
                continue
            if op == "contrast":
                grey = float(w @ (a @ channel_mean + t))
                a, t = f * a, f * t + (1 - f) * grey
                continue
            if op == "saturation":
                m, c = f * _EYE + (1 - f) * _TO_GRAY, 0.0
            else:
                theta = 2 * math.pi * f
                rot = np.array([[1, 0, 0], [0, math.cos(theta), -math.sin(theta)], [0, math.sin(theta), math.cos(theta)]])
                m, c = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ, 0.0
            a, t = m @ a, m @ t + c
    if rng.random() < p_gray:
        a, t = _TO_GRAY @ a, _TO_GRAY @ t
    return a, t


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

    def __init__(self, size: int, preset: Literal["cifar", "imagenet"] = "cifar", color_strength: float = 0.5,
                 n_views: int = 2, crop_min_scale: float = 0.08, on_device: bool = False):
        if preset not in ("cifar", "imagenet"):
            raise ValueError(f"augment preset {preset!r}: use cifar or imagenet")
        self.size, self.preset, self.color_strength, self.n_views = size, preset, color_strength, n_views
        self.scale = (crop_min_scale, 1.0)
        self.blur_kernel = blur_kernel_size(size)
        self.on_device = on_device

    def __call__(self, img, rng: random.Random | None = None) -> tuple[torch.Tensor, ...]:
        rng = rng or random
        height, width = _image_hw(img)
        boxes = [random_resized_crop_box(rng, height, width, scale=self.scale) for _ in range(self.n_views)]
        full, boxes = decode_for_boxes(img, boxes, self.size)
        views, params = [], []
        for top, left, h, w in boxes:
            crop = TF.resized_crop(full, top, left, h, w, [self.size, self.size], antialias=True)
            if rng.random() < 0.5:
                crop = crop.flip(-1)
            sigma = rng.uniform(0.1, 2.0) if self.preset == "imagenet" and rng.random() < 0.5 else 0.0
            if self.on_device:
                mean = crop.float().mean(dim=(1, 2)) / 255.0
                a, t = colour_matrix(rng, self.color_strength, mean.double().numpy())
                views.append(crop)
                params.append(torch.cat([torch.from_numpy(a / 255.0).flatten(), torch.from_numpy(t),
                                         torch.tensor([sigma], dtype=torch.float64)]).float())
                continue
            x = crop.float()
            if sigma:
                x = gaussian_blur(x, self.blur_kernel, sigma)
            mean = (x.mean(dim=(1, 2)) / 255.0).double().numpy()
            a, t = colour_matrix(rng, self.color_strength, mean)
            views.append(_normalise_affine(torch.from_numpy(a / 255.0).float(), torch.from_numpy(t).float(), x))
        return tuple(views + params)


N_PARAMS = 13  # per view on the device path: the colour matrix (9, scaled by 1/255), its offset (3), blur sigma (1)


def blur_kernel_size(size: int) -> int:
    """SimCLR's blur kernel: about 10 % of the image side, odd, at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def finish_on_device(views: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The device half of ``SimCLRViews(on_device=True)`` for a whole batch: blur, colour, clamp and normalisation.

    ``views``: uint8 [B, 3, S, S]; ``params``: float [B, 13] from the workers; both on the device that trains. Returns
    float [B, 3, S, S]. Per-sample blur is one grouped convolution per direction (sigma 0 = no blur)."""
    b, c, h, w = views.shape
    x = views.float()
    sigma = params[:, 12]
    if bool((sigma > 0).any()):
        kernel = blur_kernel_size(h)
        g = _gaussian_kernels(sigma.clamp_min(1e-6), kernel)
        identity = (torch.arange(kernel, device=x.device) == kernel // 2).float()
        g = torch.where(sigma.unsqueeze(1) > 0, g, identity)  # no blur: a kernel that keeps the pixel
        x = _blur_channels(x.reshape(b * c, h, w), g.repeat_interleave(c, dim=0)).reshape(b, c, h, w)
    return _normalise_affine(params[:, :9].reshape(b, 3, 3), params[:, 9:12], x)


class SupervisedAugment:
    """Random resized crop and horizontal flip, normalised: the usual fine-tuning augmentation. One float tensor."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img, rng: random.Random | None = None) -> torch.Tensor:
        rng = rng or random
        height, width = _image_hw(img)
        full, ((top, left, h, w),) = decode_for_boxes(img, [random_resized_crop_box(rng, height, width)], self.size)
        crop = TF.resized_crop(full, top, left, h, w, [self.size, self.size], antialias=True)
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        return _normalise_affine(_IDENTITY_255, _ZERO3, crop.float())


class EvalTransform:
    """Deterministic: resize the shorter side to ``size / crop_fraction`` (only if larger than that), centre-crop
    ``size``, normalise. An image already ``size`` a side is only normalised. One float tensor."""

    def __init__(self, size: int, crop_fraction: float = 0.875):
        self.size, self.crop_fraction = size, crop_fraction

    def __call__(self, img, rng: random.Random | None = None) -> torch.Tensor:
        height, width = _image_hw(img)
        if (height, width) == (self.size, self.size):
            return _normalise_affine(_IDENTITY_255, _ZERO3, to_uint8_chw(img).float())
        short = max(self.size, round(self.size / self.crop_fraction))
        side = min(height, width)
        full, _ = decode_for_boxes(img, [(0, 0, side, side)], short)
        if min(full.shape[1:]) != short:
            full = TF.resize(full, [short], antialias=True)
        crop = TF.center_crop(full, [self.size, self.size])
        return _normalise_affine(_IDENTITY_255, _ZERO3, crop.float())
