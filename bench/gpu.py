"""GPU benchmark (one GPU): ResNet-50 at 224 px, channels_last, SimCLR step (2 views, NT-Xent, LARS).

Runs our Engine on a pre-built batch on the GPU: ``dist.engine=ddp`` (Accelerate; DDP on one GPU) in bf16, fp16 (with
dynamic loss scaling) and fp32, and ``dist.engine=deepspeed`` with ZeRO-2 in bf16; reports images/s per GPU, peak
memory, and model FLOP utilisation (MFU) = achieved FLOP/s / peak bf16 FLOP/s (dense, the fp16 peak too), the step's
FLOPs counted once by ``torch.utils.flop_counter.FlopCounterMode``. One more run, ``ddp+device_augment``, feeds what
the loader workers send under ``data.device_augment`` (uint8 crops and each view's colour/blur parameters) and lets
the step finish the augmentation on the GPU, so its images/s include the GPU augmentation; the workers' side of that
split is timed by ``bench.pipeline``. Sized for about 2 minutes (scripts/gpu_check.sh gives it 240 s).

Without CUDA it prints one line and exits 0; ``--cpu-smoke`` instead runs every code path once on the CPU with a tiny
model (what ``scripts/gpu_check.sh --no-cuda`` runs in ``make test``, so the script a GPU machine runs is known to work
before it gets there).
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
FULL = dict(batch=128, steps=10, warmup=3, size=224, model=["model.backbone=resnet50"])
SMOKE = dict(batch=8, steps=1, warmup=1, size=32, model=["model.backbone=resnet18", "model.width=0.125"])


def _peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _device_augment_batch(batch: int, size: int, device) -> dict:
    """What the workers send under data.device_augment (uint8 views, then each view's colour/blur parameters), made by
    the workers' own transform from random images."""
    import torch

    from simclr_hpc.data import augment

    transform = augment.SimCLRViews(size, "imagenet", 1.0, on_device=True)
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    samples = [
        transform(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen), rng) for _ in range(batch)
    ]
    return {"views": tuple(torch.stack(parts).to(device) for parts in zip(*samples))}


RUNS = (("ddp", "bf16"), ("ddp", "fp16"), ("ddp", "fp32"), ("ddp+device_augment", "bf16"), ("zero2", "bf16"))
"""(engine, precision) of each row."""


def _engine_run(kind: str, precision: str, tmp: str, s: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from simclr_hpc.config import load_config
    from simclr_hpc.train.engines import create_engine
    from simclr_hpc.train.optim import build_optimizer, scaled_lr
    from simclr_hpc.train.stages import PretrainTask
    from simclr_hpc.train.task import StageContext

    batch, size = s["batch"], s["size"]
    sets = [
        f"run.root={tmp}",
        "model.cifar_stem=false",
        f"data.image_size={size}",
        "data.augment=imagenet",
        f"train.global_batch={batch}",
        f"train.precision={precision}",
        "train.channels_last=true",
        *s["model"],
    ]
    if kind == "zero2":
        sets += ["dist.engine=deepspeed", "dist.zero_stage=2"]
    if kind == "ddp+device_augment":
        sets += ["data.device_augment=true"]
    cfg = load_config(None, sets)
    engine = create_engine(cfg)
    cuda = engine.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        ctx = StageContext(cfg, engine, Path(tmp), batch, batch, 1)
        task = PretrainTask(ctx)
        model = task.build()
        optimizer = build_optimizer(model, cfg.optim, scaled_lr(cfg.optim, batch))
        model, optimizer = engine.prepare(model, optimizer, batch, 1)
        if cfg.data.device_augment:
            data = _device_augment_batch(batch, size, engine.device)
        else:
            data = {"views": tuple(torch.randn(batch, 3, size, size, device=engine.device) for _ in range(2))}

        def step():
            loss = task.step(model, data)
            engine.optimizer_step(optimizer)
            return loss

        for _ in range(s["warmup"]):
            step()
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        sync()
        t0 = time.perf_counter()
        for _ in range(s["steps"]):
            loss = step()
        float(loss)
        sync()
        dt = (time.perf_counter() - t0) / s["steps"]
        peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    finally:
        engine.close()
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = _peak_tflops(name)
    return {
        "engine": kind,
        "precision": engine.precision,
        "device": name,
        "images_per_s_per_gpu": batch / dt,
        "step_s": dt,
        "tflop_per_step": flops / 1e12,
        "mfu": (flops / dt) / (peak * 1e12) if peak else None,
        "peak_memory_gib": peak_gib,
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    smoke = "--cpu-smoke" in (argv if argv is not None else sys.argv[1:])
    if not smoke and not torch.cuda.is_available():
        print("bench.gpu: skipped: no CUDA device on this machine (run on a GPU machine, e.g. scripts/gpu_check.sh)")
        return 0
    if smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path even where a GPU exists
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for kind, precision in RUNS:
            try:
                rows.append(_engine_run(kind, precision, tmp, SMOKE if smoke else FULL))
            except Exception as exc:  # report and keep going: one engine failing must not hide the other's number
                rows.append({"engine": kind, "precision": precision, "error": f"{type(exc).__name__}: {exc}"})
            print(json.dumps(rows[-1]), flush=True)
    out = os.environ.get("OUT")
    if out and not smoke:
        with open(os.path.join(out, "bench_gpu.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
