"""SimCLR's colour distortion as one affine map of the RGB vector, and the ImageNet normalisation applied with it.

Colour jitter (brightness, contrast, saturation, hue, in random order), grayscale and normalisation are all affine maps
of the RGB vector, so each view's whole colour chain is composed into one 3x3 matrix plus offset (``colour_matrix``)
and applied in a single pass, clamped to [0, 1] once at the end (``normalise_affine``). Two deliberate differences from
torchvision's PIL/tensor ``ColorJitter``: no clamping between the four jitter ops, and hue is a rotation about the grey
axis in YIQ space (a linear hue shift) rather than an HSV round trip.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

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
IDENTITY_255 = torch.eye(3) / 255.0  # with ZERO3: the colour map of "no colour change" on [0, 255] pixels
ZERO3 = torch.zeros(3)


def normalise_affine(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``clamp(a @ rgb + t, 0, 1)`` per pixel, then ImageNet normalisation. ``x``: float [..., 3, H, W] in [0, 255] with
    ``a`` [..., 3, 3] and ``t`` [..., 3]: one image, or a batch with one colour map per image."""
    *lead, c, h, w = x.shape
    y = torch.matmul(a, x.reshape(*lead, c, h * w)).add_(t.unsqueeze(-1)).clamp_(0.0, 1.0)
    return y.sub_(_MEAN_T.to(y.device)).mul_(_INV_STD_T.to(y.device)).reshape(x.shape)


def colour_matrix(
    rng: random.Random, strength: float, channel_mean: np.ndarray, p_jitter: float = 0.8, p_gray: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """``(A, t)`` with ``out = A @ rgb + t`` (rgb in [0, 1]): SimCLR's random colour jitter and grayscale composed.

    ``channel_mean`` (RGB in [0, 1]) of the crop is needed by contrast, which blends towards the current mean grey.
    """
    a, t0, tm = colour_affine(rng, strength, p_jitter, p_gray)
    return a, t0 + tm @ channel_mean


def colour_affine(
    rng: random.Random, strength: float, p_jitter: float = 0.8, p_gray: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, t0, T)`` with ``out = A @ rgb + t0 + T @ mean``: :func:`colour_matrix` before the crop's channel mean
    is known (contrast's grey level is linear in it), so a batch can draw its colours first and take the means later.
    The same random draws, in the same order, as ``colour_matrix``."""
    a, t0, tm = _EYE, np.zeros(3), np.zeros((3, 3))
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
                a, t0, tm = f * a, f * t0, f * tm
                continue
            if op == "contrast":  # grey = w @ (A @ mean + t0 + T @ mean) = w @ t0 + (w @ (A + T)) @ mean
                grey0, grey_m = float(_GRAY @ t0), _GRAY @ (a + tm)
                a, t0, tm = f * a, f * t0 + (1 - f) * grey0, f * tm + (1 - f) * np.outer(np.ones(3), grey_m)
                continue
            if op == "saturation":
                m = f * _EYE + (1 - f) * _TO_GRAY
            else:
                theta = 2 * math.pi * f
                rot = np.array(
                    [[1, 0, 0], [0, math.cos(theta), -math.sin(theta)], [0, math.sin(theta), math.cos(theta)]]
                )
                m = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ
            a, t0, tm = m @ a, m @ t0, m @ tm
    if rng.random() < p_gray:
        a, t0, tm = _TO_GRAY @ a, _TO_GRAY @ t0, _TO_GRAY @ tm
    return a, t0, tm
