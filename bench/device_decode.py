"""``data.decode_on_device`` on the CPU against the PIL path: images/s of two views at 224 px, one core.

Both read the same JPEG shards (375x500 photos-like images, the ImageNet preset: blur, colour strength 1.0) through
``train_loader`` in this process with one thread. The PIL path is pretraining's default for images of mixed sizes
(``SimCLRViews``: the header read, crops drawn, the JPEG decoded at the smallest DCT scale that serves them, then
crop, flip, colour and blur per view). The device path's loader only reads files and draws parameters; its
``finish`` (``torchvision.io.decode_jpeg`` of the batch, ``roi_align`` crops, batched flip, blur and colour) runs here
on the CPU, where a GPU would run it. No target: on a CPU the device path decodes at full size, so it is no faster;
the figure that matters comes from a GPU (``python -m bench.device_decode cuda``, run by the GPU check).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._common import Row, alternate, log, make_imagefolder, make_shards, median


def _rate(shards: Path, make_views, finish, batch: int, batches: int) -> float:
    from simclr_hpc.data import pipeline

    it = pipeline.train_loader(shards, "train", make_views, batch_per_device=batch, seed=0)
    finish(next(it))  # the shuffle buffer's fill and first decode are not timed
    t0 = time.perf_counter()
    for _ in range(batches):
        finish(next(it))
    return batches * batch / (time.perf_counter() - t0)


def run(n_images: int = 256, batch: int = 32, batches: int = 4, reps: int = 3, device: str = "cpu") -> list[Row]:
    from simclr_hpc.data.augment import SimCLRViews
    from simclr_hpc.data.device_decode import DeviceDecodeViews

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
            folder = make_imagefolder(Path(tmp) / "img", n_images, 375, 500, "jpg")
            shards = make_shards(folder, Path(tmp) / "shards", shard_size=64)
            decoder = DeviceDecodeViews(224, "imagenet", 1.0)
            rates = alternate(
                {
                    "device": lambda: _rate(
                        shards, decoder, lambda b: decoder.finish(b["views"], device), batch, batches
                    ),
                    "pil": lambda: _rate(shards, SimCLRViews(224, "imagenet", 1.0), lambda b: b, batch, batches),
                },
                reps,
            )
    finally:
        torch.set_num_threads(threads)
    ours, pil = median(rates["device"]), median(rates["pil"])
    log(f"device decode on {device}: {ours:.1f} img/s, PIL path {pil:.1f} img/s")
    return [
        Row(
            "device_decode",
            f"224px-jpeg -> 2 views 224px, decode_on_device on {device} vs PIL path, 1 thread",
            "images/s",
            ours,
            pil,
            ours / pil,
            None,
            f"{reps} reps x {batches} batches of {batch}; the device path decodes full-size JPEGs (the PIL path "
            f"decodes at reduced DCT scale); on a GPU it runs batched nvJPEG: measure with "
            f"`python -m bench.device_decode cuda`",
        )
    ]


if __name__ == "__main__":
    for row in run(device=sys.argv[1] if len(sys.argv) > 1 else "cpu"):
        print(row)
