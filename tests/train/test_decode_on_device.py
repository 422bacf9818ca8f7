"""Pretraining with data.decode_on_device: the step decodes the batch's JPEG files and makes the views (here on the
CPU, the same code as on a GPU)."""

import numpy as np
import pytest
from PIL import Image

from simclr_hpc.config import ConfigError, load_config
from simclr_hpc.data.shards import write_shards
from simclr_hpc.train.runner import run_stage
from tests.conftest import tiny_overrides


def test_a_pretrain_run_decodes_its_jpeg_shards_in_the_step(tmp_path, tiny_shards):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (40 + i, 36, 3), dtype=np.uint8)).save(src / c / f"{i}.jpg")
    write_shards(f"imagefolder:{src}", tmp_path / "jpg", shard_size=8, image_format="jpg")
    base = [
        *tiny_overrides(tmp_path / "jpg", tmp_path, steps=2),
        "data.decode_on_device=true",
        "data.augment=imagenet",
        "train.global_batch=8",
    ]
    result = run_stage("pretrain", load_config(overrides=[*base, "run.name=d"], stage="pretrain"))
    assert result["steps"] == 2 and np.isfinite(result["metrics"]["loss"])
    png = [*tiny_overrides(tiny_shards, tmp_path, steps=2), "data.decode_on_device=true", "run.name=p"]
    with pytest.raises(ConfigError, match="data.decode_on_device: .* holds PNG shards"):
        run_stage("pretrain", load_config(overrides=png, stage="pretrain"))
