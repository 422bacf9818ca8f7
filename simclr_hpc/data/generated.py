"""The procedural ``shapes`` dataset: K classes told apart by shape alone, under heavy nuisance variation.

Class identity is the outline of one object: its geometry (disc, square, triangle, star, ...) and, beyond the first 15
classes, whether it is drawn filled or as an outline. Everything else is nuisance that a good representation must ignore:
position, scale, rotation, object colour, background colour gradient, clutter strokes and pixel noise. Colour never carries
the class (it is drawn independently of it), so SimCLR's colour jitter removes nothing a classifier needs.

Every image is drawn from its own generator seeded with ``(seed, split, class, index)``: the same arguments give the same
bytes on any machine, and adding classes or images never changes the ones already there.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

# Rotation-distinct geometries (a rotated square is still a square, so "diamond" is not a class).
BASE_SHAPES = (
    "disc",
    "square",
    "triangle",
    "star",
    "cross",
    "crescent",
    "tee",
    "ell",
    "arrow",
    "ellipse",
    "hexagon",
    "heart",
    "half_disc",
    "aitch",
    "hourglass",
)
STYLES = ("filled", "outline")
MAX_CLASSES = len(BASE_SHAPES) * len(STYLES)
SPLIT_IDS = {"train": 0, "test": 1}
SUPERSAMPLE = 3  # draw at 3x and downsample once: anti-aliased edges without a slow renderer


def class_names(num_classes: int) -> list[str]:
    """Names of the first ``num_classes`` classes, e.g. ``disc``, ``square``, ..., ``disc_outline``."""
    check_num_classes(num_classes)
    names = []
    for k in range(num_classes):
        base, style = BASE_SHAPES[k % len(BASE_SHAPES)], STYLES[k // len(BASE_SHAPES)]
        names.append(base if style == "filled" else f"{base}_{style}")
    return names


def check_num_classes(num_classes: int) -> None:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"shapes: number of classes must be 2..{MAX_CLASSES}, got {num_classes}")


Outline = list[tuple[float, float]]
"""One closed polygon, unit size, centred at 0, roughly within [-1, 1]."""

# Shapes made of straight edges, as their corners.
STRAIGHT_OUTLINES: dict[str, list[Outline]] = {
    "square": [[(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]],
    "cross": [
        [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3)]
        + [(0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]
    ],
    "tee": [[(-1, -1), (1, -1), (1, -0.45), (0.28, -0.45), (0.28, 1), (-0.28, 1), (-0.28, -0.45), (-1, -0.45)]],
    "ell": [[(-0.8, -1), (-0.25, -1), (-0.25, 0.45), (0.8, 0.45), (0.8, 1), (-0.8, 1)]],
    "arrow": [[(-1, -0.25), (0.1, -0.25), (0.1, -0.7), (1, 0), (0.1, 0.7), (0.1, 0.25), (-1, 0.25)]],
    "aitch": [
        [(-1, -1), (-0.45, -1), (-0.45, -0.22), (0.45, -0.22), (0.45, -1), (1, -1)]
        + [(1, 1), (0.45, 1), (0.45, 0.22), (-0.45, 0.22), (-0.45, 1), (-1, 1)]
    ],
    "hourglass": [[(-0.9, -1), (0.9, -1), (0, 0)], [(-0.9, 1), (0.9, 1), (0, 0)]],
}


def _regular(n: int, r: float = 1.0, phase: float = -math.pi / 2) -> Outline:
    """A regular ``n``-gon of circumradius ``r``, its first corner at angle ``phase`` (straight up by default)."""
    return [(r * math.cos(phase + 2 * math.pi * i / n), r * math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]


def _star() -> Outline:
    """Five points: corners alternate between radius 1 and 0.42."""
    pts = []
    for i in range(10):
        r = 1.0 if i % 2 == 0 else 0.42
        a = -math.pi / 2 + math.pi * i / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _crescent() -> Outline:
    """An arc of the unit circle closed by an arc of a smaller circle shifted right."""
    outer = [(math.cos(a), math.sin(a)) for a in np.linspace(math.pi * 0.35, math.pi * 1.65, 30)]
    inner = [(0.45 + 0.75 * math.cos(a), 0.75 * math.sin(a)) for a in np.linspace(math.pi * 1.55, math.pi * 0.45, 30)]
    return outer + inner


def _heart() -> Outline:
    """The classic parametric heart curve, scaled into the unit square."""
    pts = []
    for a in np.linspace(0, 2 * math.pi, 60, endpoint=False):
        x = 16 * math.sin(a) ** 3
        y = 13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a)
        pts.append((x / 17, -y / 17 + 0.1))
    return pts


# Shapes with curved edges or computed corners, as functions that trace them.
CURVED_OUTLINES: dict[str, Callable[[], list[Outline]]] = {
    "disc": lambda: [_regular(48)],
    "triangle": lambda: [_regular(3, 1.0)],
    "star": lambda: [_star()],
    "crescent": lambda: [_crescent()],
    "ellipse": lambda: [[(math.cos(a), 0.4 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 48, endpoint=False)]],
    "hexagon": lambda: [_regular(6, 1.0, 0.0)],
    "heart": lambda: [_heart()],
    "half_disc": lambda: [[(math.cos(a), math.sin(a) + 0.4) for a in np.linspace(math.pi, 2 * math.pi, 30)]],
}


def _polygon(name: str) -> list[Outline]:
    """Unit-size outline(s) of a base shape, centred at 0, roughly within [-1, 1]. Discs are polygons with many sides."""
    if name in STRAIGHT_OUTLINES:
        return STRAIGHT_OUTLINES[name]
    if name in CURVED_OUTLINES:
        return CURVED_OUTLINES[name]()
    raise ValueError(f"unknown base shape {name!r}")


_POLYGONS = {name: _polygon(name) for name in BASE_SHAPES}


def _random_colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """An RGB colour; with ``avoid``, one whose luminance differs from it by at least 70 levels (the object stays visible)."""
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if avoid is None or abs(_luma(colour) - _luma(avoid)) >= 70:
            return colour
    return np.where(_luma(avoid) > 127, 0, 255) * np.ones(3, dtype=np.int64)


def _luma(colour: np.ndarray) -> float:
    return float(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2])


def render(class_id: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` RGB image (uint8 HWC) of class ``class_id`` with every nuisance factor drawn from ``rng``."""
    base = BASE_SHAPES[class_id % len(BASE_SHAPES)]
    outline = class_id >= len(BASE_SHAPES)
    big = size * SUPERSAMPLE

    # Background: a linear gradient between two random colours in a random direction.
    c0, c1 = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(0.0, 1.0, size)
    t = np.clip(0.5 + (ramp[None, :] - 0.5) * math.cos(angle) + (ramp[:, None] - 0.5) * math.sin(angle), 0, 1)
    bg = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    img = Image.fromarray(bg.astype(np.uint8), "RGB").resize((big, big), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    mean_bg = (c0 + c1) / 2

    # Clutter: thin strokes, short and faint enough that they never look like an object.
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = rng.uniform(0, big, size=2)
        length, a = rng.uniform(0.1, 0.3) * big, rng.uniform(0, 2 * math.pi)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.line(
            [(x0, y0), (x0 + length * math.cos(a), y0 + length * math.sin(a))],
            fill=colour,
            width=max(1, SUPERSAMPLE // 2),
        )

    # The object: scale 45-80 % of the side, anywhere it fits, any rotation, a colour that contrasts with the background.
    radius = rng.uniform(0.45, 0.8) * big / 2
    cx, cy = rng.uniform(radius, big - radius, size=2)
    rot = rng.uniform(0, 2 * math.pi)
    cos_r, sin_r = math.cos(rot), math.sin(rot)
    colour = tuple(int(v) for v in _random_colour(rng, mean_bg))
    for poly in _POLYGONS[base]:
        pts = [(cx + radius * (x * cos_r - y * sin_r), cy + radius * (x * sin_r + y * cos_r)) for x, y in poly]
        if outline:
            draw.line(pts + [pts[0]], fill=colour, width=max(2, int(big * 0.07)), joint="curve")
        else:
            draw.polygon(pts, fill=colour)

    small = np.asarray(img.resize((size, size), Image.BOX), dtype=np.int16)
    noise = rng.normal(0.0, rng.uniform(2.0, 12.0), size=small.shape)
    return np.clip(small + np.rint(noise), 0, 255).astype(np.uint8)


def generate_shapes(
    num_classes: int, per_class: int, size: int = 32, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each of ``num_classes`` classes: ``(x uint8 [N, size, size, 3], y int64 [N])``, class-major.

    ``split`` ("train" or "test") selects an independent stream, so test images are never copies of training ones.
    """
    check_num_classes(num_classes)
    if per_class < 1 or size < 8:
        raise ValueError(f"shapes: need per_class >= 1 and size >= 8, got {per_class} and {size}")
    x = np.empty((num_classes * per_class, size, size, 3), dtype=np.uint8)
    y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    for k in range(num_classes):
        for i in range(per_class):
            rng = np.random.default_rng([seed, SPLIT_IDS[split], k, i])
            x[k * per_class + i] = render(k, size, rng)
    return x, y
