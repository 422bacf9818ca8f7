"""data.decode_on_device: workers read bytes and draw parameters; the device decodes and makes the views. On the CPU
the same code runs with CPU tensors: here."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from simclr_hpc.data.augment import SimCLRBatchViews
from simclr_hpc.data.decode import open_image
from simclr_hpc.data.device_decode import DeviceDecodeViews
from simclr_hpc.data.pipeline import train_loader
from simclr_hpc.data.shards import write_shards


def _jpeg(h, w, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    buf = io.BytesIO()
    coarse.convert(mode).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_the_device_path_draws_what_the_batched_views_draw_and_makes_the_same_views():
    files = [_jpeg(48, 40, i) for i in range(6)]
    device = DeviceDecodeViews(24, "imagenet", 1.0)
    batched = SimCLRBatchViews(24, (48, 40), "imagenet", 1.0)
    ours = [device(f, random.Random(i)) for i, f in enumerate(files)]
    theirs = [batched(open_image(f), random.Random(i)) for i, f in enumerate(files)]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(ours, theirs))  # the same random draws, in the same order
    views = device.finish(device.collate_views(ours), "cpu")
    reference = batched.finish_batch(torch.stack([t[0] for t in theirs]), torch.stack([t[1] for t in theirs]))
    assert [v.shape for v in views] == [(6, 3, 24, 24)] * 2
    # torchvision's libjpeg-turbo and PIL's decode the same file to within a grey level
    assert all(torch.allclose(a, b, atol=0.05) for a, b in zip(views, reference))


def test_images_of_different_sizes_and_grayscale_decode_together_and_other_formats_are_refused():
    device = DeviceDecodeViews(16, "cifar", 0.5)
    samples = [device(_jpeg(30, 50, 0), random.Random(0)), device(_jpeg(64, 20, 1, "L"), random.Random(1))]
    views = device.finish(device.collate_views(samples), "cpu")
    assert [v.shape for v in views] == [(2, 3, 16, 16)] * 2 and all(torch.isfinite(v).all() for v in views)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    with pytest.raises(ValueError, match="reads JPEG files"):
        device(png.getvalue(), random.Random(0))


def test_the_loader_sends_files_and_parameters_and_the_step_finishes_them(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (150 + 10 * i, 140, 3), dtype=np.uint8)).save(src / c / f"{i}.jpg")
    write_shards(f"imagefolder:{src}", tmp_path / "s", shard_size=4, image_format="jpg")
    decoder = DeviceDecodeViews(32)
    batch = next(train_loader(tmp_path / "s", "train", decoder, batch_per_device=4, seed=0, num_workers=2))
    files, params = batch["views"]
    assert len(files) == 4 and files[0].dtype == torch.uint8 and params.shape == (4, 2, 27)
    assert bytes(files[0][:2].tolist()) == b"\xff\xd8"  # the JPEG file itself, never decoded by the worker
    x_a, x_b = decoder.finish(batch["views"], "cpu")
    assert x_a.shape == x_b.shape == (4, 3, 32, 32) and not torch.equal(x_a, x_b)
