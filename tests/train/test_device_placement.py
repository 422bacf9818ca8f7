"""Every tensor a training step or a monitor creates lives on the device of its inputs: checked without a GPU, by a
static pass over the GPU-path modules and by running the steps and the monitor on a simulated CUDA device
(``tests/device_audit.py``). Both pass on the code and both fail on a ``torch.arange(n)`` planted in the monitor, the
bug that made the first monitored step crash on CUDA (``positive_rank1``, issue 21)."""

from __future__ import annotations

import contextlib
import random
import types

import pytest
import torch

from simclr_hpc.config import load_config
from simclr_hpc.data import augment
from simclr_hpc.models import build_classifier, build_simclr
from simclr_hpc.train import monitor as monitor_module
from simclr_hpc.train.embedding import contrastive_properties
from simclr_hpc.train.stages import DistillTask, PretrainTask
from simclr_hpc.train.stages.distill import Teacher
from simclr_hpc.train.stages.supervised import classification_step
from simclr_hpc.train.task import StageContext
from tests.conftest import tiny_overrides
from tests.device_audit import (
    CUDA,
    PACKAGE,
    FakeCudaEngine,
    ast_findings,
    device_mismatch_error,
    fake_cuda,
    source_findings,
)

PLANT_AFTER = (
    "            bank, queries = self._embed(model.encoder, self.bank), self._embed(model.encoder, self.queries)\n"
)
PLANTED = "            n = len(queries)\n            out_rank = float((queries.argmax(dim=1) == torch.arange(n)).float().mean())\n"


def _planted_monitor_source() -> str:
    source = (PACKAGE / "train/monitor.py").read_text()
    assert PLANT_AFTER in source, "the line to plant after moved: update PLANT_AFTER"
    return source.replace(PLANT_AFTER, PLANT_AFTER + PLANTED, 1)


def _context(cfg, micro: int = 8) -> StageContext:
    return StageContext(cfg, FakeCudaEngine(), None, 8, micro, 8 // micro)


def test_gpu_path_modules_create_no_tensor_off_the_device_of_their_inputs():
    assert ast_findings() == []


def test_an_allowance_for_a_host_tensor_that_no_longer_exists_is_reported(monkeypatch):
    from tests import device_audit

    stale = ("train/knn.py", "knn_hits", "randint")
    monkeypatch.setitem(device_audit.HOST_TENSORS, stale, "a call that was removed")
    assert ast_findings() == [
        "train/knn.py: knn_hits: torch.randint: a HOST_TENSORS allowance with no such call; remove it"
    ]


def test_static_check_finds_an_arange_planted_in_the_monitor():
    found = source_findings(_planted_monitor_source(), "train/monitor.py")
    assert len(found) == 1 and "PretrainMonitor.measure: torch.arange" in found[0], found


def test_fake_cuda_raises_where_a_gpu_would_and_lets_scalars_through():
    with fake_cuda():
        z = torch.randn(4, 3, device="cuda")
        assert z.device == CUDA and float(z.sum()) == 0.5  # a host read answers with a placeholder
        assert (z.sum() - torch.log(torch.tensor(2.0))).device == CUDA  # a 0-dim CPU scalar mixes, as on a GPU
        with pytest.raises(device_mismatch_error()):
            z.argmax(dim=1) == torch.arange(4)  # noqa: B015


def test_contrastive_properties_run_on_a_simulated_cuda_device():
    with fake_cuda():
        z_a, z_b = torch.randn(8, 16, device="cuda"), torch.randn(8, 16, device="cuda")
        assert set(contrastive_properties(z_a, z_b)) == {"alignment", "uniformity", "embed_std", "positive_rank1"}


@pytest.fixture(scope="module")
def monitor_cfg(tiny_shards, tmp_path_factory):
    return load_config(
        overrides=tiny_overrides(tiny_shards, tmp_path_factory.mktemp("mon"))
        + ["pretrain.monitor_bank_images=32", "pretrain.monitor_eval_images=16", "pretrain.monitor_pairs=8"]
    )


def _measure_on_fake_cuda(monitor_cls, cfg) -> dict:
    monitor = monitor_cls(cfg, CUDA, contextlib.nullcontext)  # decodes its images on the CPU, as on a GPU node
    with fake_cuda():
        with torch.device("cuda"):
            model = build_simclr(cfg.model)
        return monitor.measure(model)


def test_the_monitor_runs_on_a_simulated_cuda_device(monitor_cfg):
    measured = _measure_on_fake_cuda(monitor_module.PretrainMonitor, monitor_cfg)
    assert {"knn_top1_k20", "positive_rank1", "uniformity"} <= set(measured)


def test_an_arange_planted_in_the_monitor_fails_on_the_simulated_cuda_device(monitor_cfg):
    planted = types.ModuleType("planted_monitor")
    exec(compile(_planted_monitor_source(), "planted_monitor.py", "exec"), planted.__dict__)  # noqa: S102
    with pytest.raises(device_mismatch_error()):
        _measure_on_fake_cuda(planted.PretrainMonitor, monitor_cfg)


def _worker_views(cfg, n: int) -> tuple[torch.Tensor, ...]:
    """What the loader workers send under data.device_augment: uint8 crops, then each view's colour/blur parameters."""
    transform = augment.SimCLRViews(cfg.data.image_size, "imagenet", 1.0, on_device=True)
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    samples = [transform(torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8, generator=gen), rng) for _ in range(n)]
    return tuple(torch.stack(parts) for parts in zip(*samples))


@pytest.mark.parametrize("device_augment", [False, True], ids=["worker-views", "device-augment"])
def test_the_pretrain_step_runs_on_a_simulated_cuda_device(tmp_path, device_augment):
    cfg = load_config(overrides=["model.width=0.125", "data.image_size=16", f"data.device_augment={device_augment}"])
    ctx = _context(cfg)
    views = _worker_views(cfg, 8) if device_augment else (torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16))
    with fake_cuda():
        with torch.device("cuda"):
            model = build_simclr(cfg.model)
        loss = PretrainTask(ctx).step(model, {"views": views, "y": torch.zeros(8, dtype=torch.long), "skipped": 0})
    assert loss.device == CUDA and ctx.engine.losses[0].device == CUDA


def test_the_classification_and_distillation_steps_run_on_a_simulated_cuda_device(tiny_shards, tmp_path):
    cfg = load_config(
        overrides=tiny_overrides(tiny_shards, tmp_path) + ["distill.teacher=x", "distill.label_weight=0.5"]
    )
    ctx = _context(cfg, micro=4)  # two micro-batches
    task = DistillTask(ctx)
    keys = sorted(task.labelled)[:4] + [f"unlabelled-{i}" for i in range(4)]
    batch = {"views": (torch.randn(8, 3, 16, 16),), "y": torch.randint(0, 4, (8,)), "keys": keys, "skipped": 0}
    with fake_cuda():
        with torch.device("cuda"):
            student, teacher = build_classifier(cfg.model, 0, 4), build_classifier(cfg.model, 0, 4)
        assert classification_step(ctx, student, batch).device == CUDA
        task.teacher = Teacher(teacher, 0.0, "resnet18")
        assert task.step(student, batch).device == CUDA
    assert len(ctx.engine.losses) == 4 and all(loss.device == CUDA for loss in ctx.engine.losses)
