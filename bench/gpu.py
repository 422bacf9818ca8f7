"""GPU benchmark (one GPU): ResNet-50 at 224 px, bf16 autocast, channels_last, SimCLR step (2 views, NT-Xent).

Runs our Engine with ``dist.engine=ddp`` (Accelerate; DDP on one GPU) and ``dist.engine=deepspeed`` with ZeRO-2
(SGD, since LARS needs whole parameters), on a pre-built batch on the GPU; reports images/s per GPU and model FLOP
utilisation (MFU) = achieved FLOP/s / peak bf16 FLOP/s, the step's FLOPs counted once by
``torch.utils.flop_counter.FlopCounterMode``. The input path is timed separately: our CPU augmentation (one process)
vs ``SimCLRViews`` on the GPU is not measured because the package has no batched GPU augmentation path yet (the row
says so). Without CUDA it prints one line and exits 0. Sized for about 2 minutes (scripts/gpu_check.sh gives it 150 s).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
BATCH, STEPS, WARMUP, SIZE = 128, 10, 3, 224


def _peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _engine_run(kind: str, tmp: str) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from simclr_hpc.config import load_config
    from simclr_hpc.train.engine import Engine
    from simclr_hpc.train.optim import build_optimizer, scaled_lr
    from simclr_hpc.train.tasks import PretrainTask, StageContext

    sets = [f"run.root={tmp}", "model.backbone=resnet50", "model.cifar_stem=false", f"data.image_size={SIZE}",
            f"train.global_batch={BATCH}", "train.precision=bf16", "train.channels_last=true"]
    if kind == "zero2":
        sets += ["dist.engine=deepspeed", "dist.zero_stage=2", "optim.name=sgd"]
    cfg = load_config(None, sets)
    engine = Engine(cfg)
    try:
        from pathlib import Path

        ctx = StageContext(cfg, engine, Path(tmp), BATCH, BATCH, 1)
        task = PretrainTask(ctx)
        model = task.build()
        optimizer = build_optimizer(model, cfg.optim, scaled_lr(cfg.optim, BATCH))
        model, optimizer = engine.prepare(model, optimizer, BATCH, 1)
        views = tuple(torch.randn(BATCH, 3, SIZE, SIZE, device=engine.device) for _ in range(2))
        batch = {"views": views}

        def step():
            loss = task.step(model, batch)
            engine.optimizer_step(optimizer)
            return loss

        for _ in range(WARMUP):
            step()
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            loss = step()
        float(loss)
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / STEPS
    finally:
        engine.close()
    name = torch.cuda.get_device_name()
    peak = _peak_tflops(name)
    return {"engine": kind, "device": name, "images_per_s_per_gpu": BATCH / dt, "step_s": dt,
            "tflop_per_step": flops / 1e12, "mfu": (flops / dt) / (peak * 1e12) if peak else None}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench.gpu: skipped: no CUDA device on this machine (run on a GPU machine, e.g. scripts/gpu_check.sh)")
        return 0
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for kind in ("ddp", "zero2"):
            try:
                rows.append(_engine_run(kind, tmp))
            except Exception as exc:  # report and keep going: one engine failing must not hide the other's number
                rows.append({"engine": kind, "error": f"{type(exc).__name__}: {exc}"})
            print(json.dumps(rows[-1]), flush=True)
    rows.append({"engine": "gpu-augment", "note": "not measured: simclr_hpc has no batched GPU augmentation path"})
    print(json.dumps(rows[-1]))
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "bench_gpu.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
