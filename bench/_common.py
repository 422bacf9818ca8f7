"""What every benchmark shares: alternating timing, result rows, and the generated images they read."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One measured ratio. ``ratio`` is ours / baseline for the ``metric`` (time: lower is better; rate: higher).

    ``target`` is ``"<= x"`` or ``">= x"``; ``None`` for a row that is reported without a target. ``passed`` is None
    when nothing was measured (``ratio`` None and ``note`` says why).
    """

    bench: str
    case: str
    metric: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    target: str | None
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.ratio is None or self.target is None:
            return None
        op, value = self.target.split()
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def alternate(runs: dict[str, Callable[[], float]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call each of ``runs`` in turn, ``warmup`` rounds discarded then ``reps`` rounds kept; each call returns a number
    (seconds, or a rate). Alternating ours and the baseline spreads the shared machine's load over both."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + reps):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))  # neither always runs first
        for name in order:
            value = runs[name]()
            if i >= warmup:
                out[name].append(value)
    return out


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A uint8 RGB image with photo-like statistics (smooth regions, edges, fine noise) so JPEG/PNG sizes are realistic."""
    coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    from PIL import Image

    img = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    img = img + rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_imagefolder(
    root: Path, n_images: int, height: int, width: int, fmt: str, n_classes: int = 4, seed: int = 0
) -> Path:
    """``root/<class>/<i>.<fmt>``: ``n_images`` generated images (``fmt`` png, or jpg at quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n_images):
        cls_dir = root / f"c{i % n_classes}"
        cls_dir.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(_smooth_image(rng, height, width))
        if fmt == "jpg":
            img.save(cls_dir / f"{i:05d}.jpg", quality=90)
        else:
            img.save(cls_dir / f"{i:05d}.png")
    return root


def make_shards(imagefolder: Path, out: Path, shard_size: int = 1000) -> Path:
    """The same images as WebDataset shards, written by the real CLI (``simclr-hpc data shards imagefolder:DIR OUT``)."""
    cmd = [
        sys.executable,
        "-c",
        "from simclr_hpc.cli.main import main; main()",
        "data",
        "shards",
        f"imagefolder:{imagefolder}",
        str(out),
        "--shard-size",
        str(shard_size),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"simclr-hpc data shards failed:\n{proc.stdout}\n{proc.stderr}")
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
