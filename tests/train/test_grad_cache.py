"""Gradient caching computes the exact full-batch NT-Xent loss and gradients with small micro-batches."""

from pathlib import Path

import pytest
import torch

from simclr_hpc.config import ConfigError, load_config
from simclr_hpc.train.engine import derive_batch
from simclr_hpc.train.engines import create_engine
from simclr_hpc.train.stages import PretrainTask
from simclr_hpc.train.task import StageContext


def _grads(micro: int, tmp_path: Path):
    cfg = load_config(overrides=["model.width=0.125", "train.global_batch=16", "pretrain.temperature=0.2"])
    engine = create_engine(cfg)
    torch.manual_seed(0)
    task = PretrainTask(StageContext(cfg, engine, tmp_path, 16, micro, 16 // micro))
    model = task.build().eval()  # BN on running statistics: chunking must not change the function being trained
    gen = torch.Generator().manual_seed(3)
    x_a = torch.randn(16, 3, 16, 16, generator=gen)
    batch = {"views": (x_a, x_a + 0.2 * torch.randn(x_a.shape, generator=gen)), "y": torch.zeros(16), "skipped": 0}
    loss = task.step(model, batch)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("micro", [8, 4, 1])
def test_cached_loss_and_gradients_equal_full_batch(tmp_path, micro):
    full_loss, full = _grads(16, tmp_path)
    cached_loss, cached = _grads(micro, tmp_path)
    assert cached_loss.item() == pytest.approx(full_loss.item(), rel=1e-6)
    assert full.keys() == cached.keys()
    for name in full:
        # float32 sums in a different order: stated tolerance 1e-4 relative, 1e-6 absolute
        torch.testing.assert_close(cached[name], full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_batch_is_derived_from_global_batch_and_world_size():
    assert derive_batch(4096, 32, 0) == (128, 128, 1)
    assert derive_batch(4096, 32, 64) == (128, 64, 2)
    assert derive_batch(4096, 16, 0) == (256, 256, 1)  # a requeue onto fewer nodes keeps the global batch
    with pytest.raises(ConfigError, match="train.global_batch: 100 is not divisible by the world size 3"):
        derive_batch(100, 3, 0)
