"""The engine-level GPU checks (``scripts/gpu_checks.py`` runs them through ``gpu_check_steps.run``): GPU binding,
NCCL collectives, one LARS step under each engine and precision, the ZeRO steps against DDP's, fp16."""

from __future__ import annotations

import os
from pathlib import Path

from gpu_check_steps import Sizes, _overrides, note


def check_binding(s: Sizes, out: Path) -> None:
    import torch

    from simclr_hpc import distributed as D

    if not s.cuda:
        ranks = [D.gpu_index(r, D.visible_gpus({"CUDA_VISIBLE_DEVICES": "0"})) for r in range(4)]
        assert ranks == [0, 0, 0, 0], ranks
        note("simulated: CUDA_VISIBLE_DEVICES=0 gives ordinal 0 to local ranks 0-3")
        return
    # A task of a node that binds one GPU per task: it sees one GPU, and its LOCAL_RANK is 3.
    os.environ.update(CUDA_VISIBLE_DEVICES="0", LOCAL_RANK="3", RANK="0", WORLD_SIZE="1")
    env = D.DistEnv(rank=0, world_size=1, local_rank=3, local_world_size=4)
    for engine_sets in (["dist.engine=ddp"], ["dist.engine=deepspeed", "dist.zero_stage=1"]):
        result = _step(s, out, engine_sets, env=env)
        assert result["device"] == "cuda:0", result["device"]
        note(f"{engine_sets[0]} with LOCAL_RANK=3 on {result['device']}: loss {result['loss']:.3f}")
    assert torch.cuda.device_count() == 1


def check_nccl(s: Sizes, out: Path) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    from simclr_hpc import distributed as D
    from simclr_hpc.losses import nt_xent

    device = torch.device("cuda", 0) if s.cuda else torch.device("cpu")
    backend = "nccl" if s.cuda else "gloo"
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=60),
        **({"device_id": device} if s.cuda else {}),
    )
    try:
        assert D.all_reduce_sum(torch.ones(3, device=device)).tolist() == [1.0, 1.0, 1.0]
        assert D.all_reduce_sum(torch.tensor([2])).item() == 2  # a host tensor: the round trip through the device
        assert D.all_gather_objects({"rank": 0}) == [{"rank": 0}]
        D.open_host_group(60)
        assert D.host_sum([1, 2]) == [1, 2]  # the per-step vote, on gloo beside NCCL
        D.barrier()
        gen = torch.Generator().manual_seed(0)
        z_a, z_b = (torch.randn(8, 16, generator=gen).to(device).requires_grad_() for _ in range(2))
        # The gradient-keeping gather, through the collective even at one rank (all_gather_with_grad skips it there).
        gathered = nt_xent(z_a, z_b, 0.2, gather=D._GatherWithGrad.apply, rank=0)
        plain = nt_xent(z_a, z_b, 0.2)
        for a, b in zip(torch.autograd.grad(gathered, (z_a, z_b)), torch.autograd.grad(plain, (z_a, z_b))):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(gathered, plain)
        note(
            f"{backend}: all_reduce (device and host tensors), all_gather_object, barrier, the host vote, the "
            f"gradient-keeping gather forward and backward"
        )
    finally:
        D.destroy_process_group()


def _host_syncs(step) -> int:
    """Host syncs one call of ``step`` makes (torch's CUDA sync debug mode; the step after this one is not counted)."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def _step(s: Sizes, out: Path, engine_sets: list[str], env=None, precision: str = "bf16", steps: int = 1) -> dict:
    """``steps`` LARS steps of a SimCLR model from seed-0 weights on a fixed batch: the loss, the masters before and
    after (fp32, on the CPU), the device."""
    import torch

    from simclr_hpc.config import load_config
    from simclr_hpc.models import build_simclr
    from simclr_hpc.train.engines import create_engine
    from simclr_hpc.train.optim import build_optimizer
    from simclr_hpc.train.stages import PretrainTask
    from simclr_hpc.train.task import StageContext

    cfg = load_config(overrides=_overrides(s, out, f"train.precision={precision}", "optim.name=lars", *engine_sets))
    engine = create_engine(cfg, env)
    try:
        task = PretrainTask(StageContext(cfg, engine, out, s.batch, s.batch, 1))
        torch.manual_seed(0)
        model = build_simclr(cfg.model)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model, optimizer = engine.prepare(model, build_optimizer(model, cfg.optim, 0.3), s.batch, 1)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(s.batch, 3, s.size, s.size, generator=gen)
        batch = {"views": (x, x + 0.1 * torch.randn(x.shape, generator=gen)), "y": torch.zeros(s.batch), "skipped": 0}
        losses = []
        for _ in range(steps):
            losses.append(float(task.step(model, batch)))
            engine.optimizer_step(optimizer)
        syncs = _host_syncs(lambda: (task.step(model, batch), engine.optimizer_step(optimizer))) if s.cuda else None
        with engine.autocast():
            dtype = engine.unwrap(model).encoder(x[:2].to(engine.device)).dtype
        conv = engine.unwrap(model).encoder.conv1.weight
        return {
            "loss": losses[-1],
            "losses": losses,
            "before": before,
            "after": engine.model_state(model),
            "device": str(engine.device),
            "autocast": str(dtype),
            "precision": engine.precision,
            "channels_last": conv.is_contiguous(memory_format=torch.channels_last),
            "amp": engine.amp_state(),
            "syncs_per_step": syncs,
        }
    finally:
        engine.close()


ENGINES = {
    "ddp": ["dist.engine=ddp"],
    "zero0": ["dist.engine=deepspeed", "dist.zero_stage=0"],
    "zero1": ["dist.engine=deepspeed", "dist.zero_stage=1"],
    "zero2": ["dist.engine=deepspeed", "dist.zero_stage=2"],
}


def check_step(kind: str, s: Sizes, out: Path) -> None:
    import math

    import torch

    engine, _, precision = kind.partition("-")
    precision = precision or "bf16"
    result = _step(s, out, ENGINES[engine], precision=precision)
    assert math.isfinite(result["loss"]) and result["precision"] == precision, result
    dtype = {"bf16": "torch.bfloat16", "fp32": "torch.float32"}[precision]
    assert result["device"].startswith("cuda" if s.cuda else "cpu") and result["autocast"] == dtype, result
    assert all(v.dtype == torch.float32 for v in result["after"].values() if v.is_floating_point())
    if kind == "ddp":
        assert result["channels_last"], "train.channels_last did not apply"
    (out / "steps").mkdir(exist_ok=True)
    torch.save(result, out / "steps" / f"{kind}.pt")
    syncs = "" if result["syncs_per_step"] is None else f", {result['syncs_per_step']} host syncs in a step"
    note(f"{kind}: loss {result['loss']:.4f} on {result['device']}{syncs}, fp32 masters saved")


def check_zero_vs_ddp(s: Sizes, out: Path) -> None:
    """Every bf16 step against DDP's fp32 step from the same weights: DeepSpeed's bf16 (16-bit weights, fp32 masters)
    must land no further from it than DDP's bf16 autocast does, and ZeRO 0, 1 and 2 must agree with each other (LARS
    over flat partitions equals LARS over whole parameters)."""
    import torch

    found = {k: torch.load(out / "steps" / f"{k}.pt", weights_only=False) for k in (*ENGINES, "ddp-fp32")}
    exact = found["ddp-fp32"]
    keys = [k for k, v in exact["before"].items() if v.is_floating_point() and "running" not in k]

    def update(kind: str) -> torch.Tensor:
        assert all(torch.equal(found[kind]["before"][k], exact["before"][k]) for k in keys), f"{kind}: other weights"
        return torch.cat([(found[kind]["after"][k] - found[kind]["before"][k]).flatten().float() for k in keys])

    def cosine(kind: str) -> float:
        return float(torch.nn.functional.cosine_similarity(update(kind), update("ddp-fp32"), dim=0))

    floor = cosine("ddp")
    note(
        f"cosine of the bf16 updates to the fp32 one: ddp {floor:.4f}, "
        + ", ".join(f"{k} {cosine(k):.4f}" for k in ("zero0", "zero1", "zero2"))
    )
    for kind in ("zero0", "zero1", "zero2"):
        assert cosine(kind) >= floor - 0.02, f"{kind}'s step is further from the exact one than bf16 explains"
    for kind in ("zero1", "zero2"):
        assert torch.allclose(update(kind), update("zero0"), rtol=1e-3, atol=1e-6), f"{kind} and zero0 disagree"


def check_fp16(s: Sizes, out: Path) -> None:
    import math

    kinds = ["ddp", "zero1"] if s.cuda else ["ddp"]  # DeepSpeed's CPU backend has no fp16 loss scaling
    for kind in kinds:
        result = _step(s, out, ENGINES[kind], precision="fp16", steps=5)
        assert all(math.isfinite(v) for v in result["losses"]) and result["autocast"] == "torch.float16", result
        note(f"fp16 {kind}: 5 steps, last loss {result['loss']:.4f}, scaler {result['amp']}")
