"""Evaluation memory: the peak RSS of a linear probe over 5,000 and over 20,000 images at 224 px.

A linear probe (``simclr-hpc run finetune``, protocol linear, every label) embeds the training split once with a frozen
encoder, trains a linear layer on the features and scores the test split: what it holds should grow with the
features, not with the images. Each size runs in a fresh process (its ``VmHWM``, the main process's peak; the two
loader workers each hold at most their prefetched batches), on shards of the same generated JPEGs as ``sharding``
(224 px, the last 20 % of each the test split). The encoder is a ResNet-18 at width 1/8 (64 features: the forward
passes stay short on 2 cores; the images are full size). The row compares the larger peak with the smaller one plus
the features the larger run holds in addition (raw and standardised training features, and the test split's share:
``3 * extra images * 64 * 4`` bytes, an upper bound): target <= 1.2.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import REPO, Row, log
from bench.sharding import CACHE, cached_imagefolder

TARGET = "<= 1.2"
FEAT_DIM = 64
_PROBE = """
import atexit, sys
def peak():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print("PEAK_KB", int(line.split()[1]), file=sys.stderr)
atexit.register(peak)
from simclr_hpc.cli.main import main
sys.argv = ["simclr-hpc", *sys.argv[1:]]
main()
"""


def _shards(n_images: int, size: int, pool: int = 20_000) -> Path:
    """Shards of the first ``n_images`` of ``pool`` cached generated images (a folder of links to them), built once."""
    out = CACHE / f"shards-{n_images}-{size}"
    if (out / "index.json").exists():
        return out
    full = cached_imagefolder(max(n_images, pool), size)
    files = sorted(full.rglob("*.jpg"), key=lambda p: p.name)[:n_images]  # names number the images across classes
    folder = CACHE / f"links-{n_images}-{size}"
    for f in files:
        link = folder / f.parent.name / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(f)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "simclr_hpc.cli.main",
            "data",
            "shards",
            f"imagefolder:{folder}",
            str(out),
            "--image-format",
            "jpg",
            "--shard-size",
            "500",
            "--workers",
            "2",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out


def peak_mb(shards: Path, root: Path, size: int, steps: int) -> float:
    sets = [
        f"data.shards={shards}",
        f"run.root={root}",
        f"data.image_size={size}",
        "data.num_workers=2",
        "finetune.encoder=random",
        "finetune.protocol=linear",
        "finetune.label_fraction=1.0",
        "model.backbone=resnet18",
        "model.width=0.125",
        "model.cifar_stem=false",
        f"train.steps={steps}",
        "train.global_batch=256",
        "train.eval_batch_per_device=128",
        "log.backends=[jsonl]",
    ]
    cmd = [sys.executable, "-c", _PROBE, "run", "finetune", *(w for s in sets for w in ("--set", s))]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"linear probe failed:\n{proc.stderr[-3000:]}")
    return int(proc.stderr.split("PEAK_KB")[-1].split()[0]) / 1024


def run(sizes: tuple[int, int] = (5_000, 20_000), size: int = 224, steps: int = 20) -> list[Row]:
    small_n, large_n = sizes
    small_shards, large_shards = _shards(small_n, size, large_n), _shards(large_n, size, large_n)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        small = peak_mb(small_shards, Path(tmp) / "small", size, steps)
        large = peak_mb(large_shards, Path(tmp) / "large", size, steps)
    extra_mb = 3 * (large_n - small_n) * FEAT_DIM * 4 / 2**20
    log(f"eval memory: {small_n} images {small:.0f} MB, {large_n} images {large:.0f} MB, extra features {extra_mb:.1f}")
    return [
        Row(
            "eval_memory",
            f"linear probe, {large_n} vs {small_n} images at {size} px",
            "peak RSS, MB",
            large,
            small + extra_mb,
            large / (small + extra_mb),
            TARGET,
            f"main process VmHWM: {small:.0f} MB at {small_n} images, {large:.0f} MB at {large_n}; baseline = the "
            f"smaller + {extra_mb:.1f} MB of extra features (ResNet-18 w1/8, {FEAT_DIM}-d); 2 loader workers, "
            f"eval batch 128; the images of one pass alone would be "
            f"{large_n * 3 * size * size * 4 / 2**30:.1f} GB as float tensors",
        )
    ]
