"""GPU checks (marked ``gpu``; skipped without CUDA, run by scripts/gpu_check.sh on a GPU machine).

bf16 autocast + channels_last through the real Engine, DeepSpeed ZeRO-2 on one GPU, and a ResNet-50 at 224 px step
with its images/s and peak memory printed for the README; fp16 with dynamic loss scaling (the V100/T4 path) through the
Engine, a whole pretrain run and DeepSpeed's own fp16.
"""

import time

import pytest
import torch

from tests.distributed_helpers import run_ranks

pytestmark = pytest.mark.gpu


def test_engine_uses_bf16_and_channels_last_on_gpu(tmp_path):
    from simclr_hpc.config import load_config
    from simclr_hpc.train.engines import create_engine
    from simclr_hpc.train.stages import PretrainTask
    from simclr_hpc.train.task import StageContext

    cfg = load_config(overrides=["model.width=0.25", "train.global_batch=32"])
    engine = create_engine(cfg)
    assert engine.cuda and engine.bf16
    task = PretrainTask(StageContext(cfg, engine, tmp_path, 32, 32, 1))
    model = task.build()
    from simclr_hpc.train.optim import build_optimizer

    model, opt = engine.prepare(model, build_optimizer(model, cfg.optim, 0.1))
    x = torch.randn(32, 3, 32, 32)
    loss = task.step(model, {"views": (x, x.flip(-1)), "y": torch.zeros(32), "skipped": 0})
    engine.optimizer_step(opt)
    assert torch.isfinite(loss)
    conv = engine.unwrap(model).encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    with engine.autocast():
        assert engine.unwrap(model).encoder(x.cuda()).dtype == torch.bfloat16
    engine.close()


def test_deepspeed_zero2_bf16_one_gpu_trains(tmp_path):
    args = {
        "overrides": [
            "model.width=0.25",
            "train.global_batch=32",
            "dist.engine=deepspeed",
            "dist.zero_stage=2",
            "optim.name=adamw",
            "optim.base_lr=0.001",
            "optim.lr_scaling=none",
        ],
        "steps": 5,
    }
    (out,) = run_ranks("train", 1, tmp_path, args, extra_env={"DS_ACCELERATOR": "cuda"})
    assert all(torch.isfinite(torch.tensor(out["losses"])))


def test_resnet50_224px_bf16_step_throughput_and_memory(tmp_path):
    from simclr_hpc.config import load_config
    from simclr_hpc.train.engines import create_engine
    from simclr_hpc.train.optim import build_optimizer
    from simclr_hpc.train.stages import PretrainTask
    from simclr_hpc.train.task import StageContext

    batch = 128
    cfg = load_config(
        overrides=[
            "model.backbone=resnet50",
            "model.cifar_stem=false",
            f"train.global_batch={batch}",
            "data.image_size=224",
            "model.proj_layers=3",
        ]
    )
    engine = create_engine(cfg)
    task = PretrainTask(StageContext(cfg, engine, tmp_path, batch, batch, 1))
    model = task.build()
    model, opt = engine.prepare(model, build_optimizer(model, cfg.optim, 0.1))
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    views = {"views": (x, x.flip(-1)), "y": torch.zeros(batch), "skipped": 0}
    for _ in range(3):
        task.step(model, views)
        engine.optimizer_step(opt)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0, steps = time.perf_counter(), 10
    for _ in range(steps):
        task.step(model, views)
        engine.optimizer_step(opt)
    torch.cuda.synchronize()
    rate = steps * batch / (time.perf_counter() - t0)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30
    print(f"gpu figures: resnet50 224px bf16 channels_last batch {batch}: {rate:.0f} images/s, peak {peak_gb:.1f} GiB")
    assert rate > 0 and peak_gb > 0
    engine.close()


def test_engine_uses_fp16_with_a_loss_scaler_on_gpu(tmp_path):
    from simclr_hpc.config import load_config
    from simclr_hpc.train.engines import create_engine
    from simclr_hpc.train.optim import build_optimizer
    from simclr_hpc.train.stages import PretrainTask
    from simclr_hpc.train.task import StageContext

    cfg = load_config(overrides=["model.width=0.25", "train.global_batch=32", "train.precision=fp16"])
    engine = create_engine(cfg)  # Engine is abstract: the DDP engine, whose fp16 has our LossScaler
    assert engine.fp16 and engine.scaler.enabled and not engine.bf16
    task = PretrainTask(StageContext(cfg, engine, tmp_path, 32, 32, 1))
    model = task.build()
    model, opt = engine.prepare(model, build_optimizer(model, cfg.optim, 0.1))
    x = torch.randn(32, 3, 32, 32)
    for _ in range(5):
        loss = task.step(model, {"views": (x, x.flip(-1)), "y": torch.zeros(32), "skipped": 0})
        engine.optimizer_step(opt)
        assert torch.isfinite(loss)
    with engine.autocast():
        assert engine.unwrap(model).encoder(x.cuda()).dtype == torch.float16
    state = engine.amp_state()
    assert state["scaler"]["scale"] > 0 and 0 <= state["skipped"] == engine.amp_skipped < 5
    engine.close()


def test_auto_precision_is_bf16_on_a_gpu_that_has_it():
    from simclr_hpc.train.precision import device_precision

    native = torch.cuda.get_device_capability() >= (8, 0)  # not is_bf16_supported(): it counts emulated bf16
    assert device_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp16")


def test_fp16_pretrain_run_on_gpu_records_its_precision_and_scaler(tiny_shards, tmp_path):
    import json

    from typer.testing import CliRunner

    from simclr_hpc.cli.main import app
    from simclr_hpc.train import checkpoint as ckpt
    from tests.conftest import tiny_overrides

    args = ["run", "pretrain"] + [
        a
        for o in tiny_overrides(tiny_shards, tmp_path, steps=4) + ["run.name=fp16", "train.precision=fp16"]
        for a in ("--set", o)
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "t" / "pretrain" / "fp16"
    done = json.loads((run_dir / "result.json").read_text())
    assert done["precision"] == "fp16" and done["device"].startswith("cuda") and done["amp_skipped_steps"] < 4
    state = ckpt.load_state(ckpt.latest_whole(run_dir / "checkpoints"))
    assert state["amp"]["scaler"]["scale"] > 0


def test_deepspeed_zero1_fp16_one_gpu_trains(tmp_path):
    args = {
        "overrides": [
            "model.width=0.25",
            "train.global_batch=32",
            "dist.engine=deepspeed",
            "dist.zero_stage=1",
            "train.precision=fp16",
            "optim.name=adamw",
            "optim.base_lr=0.001",
            "optim.lr_scaling=none",
        ],
        "steps": 5,
    }
    (out,) = run_ranks("train", 1, tmp_path, args, extra_env={"DS_ACCELERATOR": "cuda"})
    assert all(torch.isfinite(torch.tensor(out["losses"])))
