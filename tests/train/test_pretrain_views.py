"""Which two-view augmentation pretraining uses: batched when the shards' images all have one size."""

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from simclr_hpc.config import load_config
from simclr_hpc.data.augment import SimCLRBatchViews, SimCLRViews
from simclr_hpc.data.shards import write_shards
from simclr_hpc.train.stages.pretrain import PretrainTask


def _transform(shards, *overrides):
    cfg = load_config(overrides=[f"data.shards={shards}", "data.image_size=16", *overrides])
    return PretrainTask(SimpleNamespace(cfg=cfg))._transform()


@pytest.fixture(scope="module")
def one_size(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "shapes"
    write_shards("shapes:2:6:16", out, shard_size=8, seed=0)
    return out


def test_shards_of_one_image_size_are_augmented_by_the_batch(one_size):
    batched = _transform(one_size)
    assert type(batched) is SimCLRBatchViews and batched.image_hw == (16, 16)
    assert type(_transform(one_size, "data.batch_augment=false")) is SimCLRViews
    on_device = _transform(one_size, "data.device_augment=true")  # the device path keeps its per-image crops
    assert type(on_device) is SimCLRViews and on_device.on_device


def test_shards_of_mixed_image_sizes_are_augmented_image_by_image(tmp_path):
    folder = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i, side in enumerate((20, 24, 28)):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    write_shards(f"imagefolder:{folder}", tmp_path / "shards", val_fraction=0.0, seed=0)
    assert type(_transform(tmp_path / "shards")) is SimCLRViews
