"""Input pipeline: shards -> decode -> two augmented views -> batch, images/s per worker.

Ours: ``simclr_hpc.data.pipeline.train_loader`` over WebDataset shards with ``augment.SimCLRViews``.
Baseline: torchvision ``ImageFolder`` (its default PIL loader) over the same images, with torchvision's v2 transforms
doing the same SimCLR recipe in the order and form torchvision's docs recommend for speed (``ToImage`` first, then
the geometric and colour ops on uint8 tensors, ``ToDtype(float32, scale=True)`` and ``Normalize`` last), two views per
image, shuffled, batched by a ``DataLoader``. The classic PIL transforms (``torchvision.transforms``, ``ToTensor``
after the colour ops) run too, and the ratio is taken against whichever torchvision variant was faster. Both use the same number of worker processes (one thread each, as
DataLoader workers do) and the same batch size. Timing starts after each loader's first batch, so worker start-up
and our shuffle-buffer fill are excluded from both.

At 32 px the batched path of ``data.batch_augment`` (what pretraining uses on images of one size) runs too, against
our per-image path. At 224 px the split path of ``data.device_augment`` runs too: the workers' share alone (decode, crop, flip; colour,
blur and normalisation move to the GPU, where ``bench.gpu`` times them).

Sizes: 32 px from 32x32 PNGs (the CIFAR preset: no blur, colour strength 0.5) and 224 px from 375x500 JPEGs (the
ImageNet preset: blur p=0.5 with a 23 px kernel, colour strength 1.0), the shards written by
``simclr-hpc data shards imagefolder:DIR OUT`` (the JPEGs stored as they are).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench._common import Row, alternate, log, make_imagefolder, make_shards, median

BATCHED_TARGET = ">= 1.5"
"""The batched views against our own per-image views at 32 px (measured in one process: 2.3x per 128-image batch)."""
CASES = {
    # name: (source height, width, format, output size, preset, colour strength, images)
    "32px-png": (32, 32, "png", 32, "cifar", 0.5, 1024),
    "224px-jpeg": (375, 500, "jpg", 224, "imagenet", 1.0, 256),
}


def torchvision_views(size: int, preset: str, strength: float):
    """SimCLR's two-view augmentation written with torchvision.transforms.v2, as a torchvision user would."""
    from torchvision.transforms import v2

    s = strength
    ops = [
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if preset == "imagenet":
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    one = v2.Compose(ops)
    return lambda img: (one(img), one(img))


def torchvision_classic_views(size: int, preset: str, strength: float):
    """The same recipe with the classic PIL-based ``torchvision.transforms`` (ToTensor after the PIL colour ops)."""
    from torchvision import transforms as T

    s = strength
    ops = [
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if preset == "imagenet":
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
        ops.append(T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    ops += [T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    one = T.Compose(ops)
    return lambda img: (one(img), one(img))


def _rate(loader_factory, batches: int, batch_size: int, workers: int) -> float:
    """Images per second per worker over ``batches`` batches, after the first."""
    it = iter(loader_factory())
    first = next(it)
    assert len(first["views"] if isinstance(first, dict) else first[0]) in (2, 4)  # 4: uint8 views + their params
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch_size / (time.perf_counter() - t0) / max(1, workers)
    del it
    return rate


def prepare(root: Path, case: str, n_images: int | None = None) -> tuple[Path, Path]:
    height, width, fmt, *_rest, default_n = CASES[case]
    folder = make_imagefolder(root / case / "folder", n_images or default_n, height, width, fmt)
    shards = make_shards(folder, root / case / "shards", shard_size=128)
    return folder, shards


def run(
    cases=tuple(CASES),
    reps: int = 3,
    batches: int | None = None,
    batch_size: int = 32,
    workers: int = 1,
    n_images: int | None = None,
) -> list[Row]:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from simclr_hpc.data import augment, pipeline

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for case in cases:
            _h, _w, _fmt, size, preset, strength, _n = CASES[case]
            folder, shards = prepare(Path(tmp), case, n_images)
            k = batches or (12 if size <= 64 else 4)

            def ours(on_device=False, batched=False):
                views = (
                    augment.SimCLRBatchViews(size, (_h, _w), preset, strength)
                    if batched
                    else augment.SimCLRViews(size, preset, strength, on_device=on_device)
                )
                return pipeline.train_loader(
                    shards, "train", views, batch_per_device=batch_size, seed=0, num_workers=workers
                )

            def theirs(make_views):
                dataset = ImageFolder(str(folder), transform=make_views(size, preset, strength))
                return DataLoader(
                    dataset,
                    batch_size=batch_size,
                    shuffle=True,
                    num_workers=workers,
                    drop_last=True,
                    persistent_workers=False,
                )

            runs = {
                "ours": lambda: _rate(ours, k, batch_size, workers),
                "v2": lambda: _rate(lambda: theirs(torchvision_views), k, batch_size, workers),
                "classic": lambda: _rate(lambda: theirs(torchvision_classic_views), k, batch_size, workers),
            }
            if size >= 224:  # data.device_augment: the workers' share when colour/blur/normalisation run on the GPU
                runs["device"] = lambda: _rate(lambda: ours(on_device=True), k, batch_size, workers)
            else:  # images of one size: what pretraining uses by default (data.batch_augment)
                runs["batched"] = lambda: _rate(lambda: ours(batched=True), k, batch_size, workers)
            rates = alternate(runs, reps, warmup=0)
            mine, v2, classic = median(rates["ours"]), median(rates["v2"]), median(rates["classic"])
            base = max(v2, classic)
            target = ">= 2.0" if size >= 224 else None
            rows.append(
                Row(
                    "pipeline",
                    f"{case} -> 2 views {size}px, {workers} worker(s), batch {batch_size}",
                    "images/s per worker",
                    mine,
                    base,
                    mine / base,
                    target,
                    f"{reps} reps x {k} batches; baseline = faster torchvision variant "
                    f"(v2 uint8 {v2:.1f}, classic PIL {classic:.1f} img/s)",
                )
            )
            log(
                f"pipeline {case}: ours {mine:.1f} img/s, torchvision v2 {v2:.1f} classic {classic:.1f}, "
                f"ratio {mine / base:.2f}"
            )
            if "device" in rates:
                split = median(rates["device"])
                rows.append(
                    Row(
                        "pipeline",
                        f"{case}, data.device_augment: worker share vs whole CPU path",
                        "images/s per worker",
                        split,
                        mine,
                        split / mine,
                        None,
                        f"workers decode, crop and flip only; colour, blur and normalisation then run batched "
                        f"on the GPU (timed by bench.gpu when a GPU is present); {reps} reps x {k} batches; "
                        f"no target",
                    )
                )
                log(f"pipeline {case}: worker share with device_augment {split:.1f} img/s ({split / mine:.2f}x)")
            if "batched" in rates:
                batched = median(rates["batched"])
                rows.append(
                    Row(
                        "pipeline",
                        f"{case}, data.batch_augment: views made per batch vs per image",
                        "images/s per worker",
                        batched,
                        mine,
                        batched / mine,
                        BATCHED_TARGET,
                        f"SimCLRBatchViews (roi_align crops, one batched colour map) vs SimCLRViews, same "
                        f"shards and draws; {reps} reps x {k} batches",
                    )
                )
                log(f"pipeline {case}: batched views {batched:.1f} img/s ({batched / mine:.2f}x per image)")
    return rows


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
