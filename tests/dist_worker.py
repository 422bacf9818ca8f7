"""One rank of a multi-process test. Launched by tests/distributed_helpers.py with RANK/WORLD_SIZE/MASTER_* set.

Usage: python -m tests.dist_worker CASE OUT_FILE [JSON_ARGS]. Writes a torch file with what the test compares.
"""

from __future__ import annotations

import json
import sys

import torch


def case_world(args: dict) -> dict:
    from simclr_hpc.config import load_config
    from simclr_hpc.train.engines import create_engine

    engine = create_engine(load_config(overrides=args.get("overrides", [])))
    out = {"rank": engine.rank, "world_size": engine.world_size, "hostnames": engine.hostnames}
    t = torch.tensor([float(engine.rank + 1)])
    from simclr_hpc import distributed as D

    out["sum"] = float(D.all_reduce_sum(t).item())
    engine.close()
    return out


def case_ntxent(args: dict) -> dict:
    from simclr_hpc import distributed as D
    from simclr_hpc.config import load_config
    from simclr_hpc.losses import nt_xent
    from simclr_hpc.train.engines import create_engine

    engine = create_engine(load_config())
    n_global, dim, tau = args["n"], args["d"], args["tau"]
    gen = torch.Generator().manual_seed(0)
    z_a_all, z_b_all = torch.randn(n_global, dim, generator=gen), torch.randn(n_global, dim, generator=gen)
    n = n_global // engine.world_size
    sl = slice(engine.rank * n, (engine.rank + 1) * n)
    z_a, z_b = z_a_all[sl].clone().requires_grad_(), z_b_all[sl].clone().requires_grad_()
    gather = D.all_gather_with_grad if engine.world_size > 1 else None
    loss = nt_xent(z_a, z_b, tau, gather=gather, rank=engine.rank)
    loss.backward()
    out = {
        "loss": loss.detach(),
        "grad_a": z_a.grad,
        "grad_b": z_b.grad,
        "rank": engine.rank,
        "world": engine.world_size,
    }
    engine.close()
    return out


def case_train(args: dict) -> dict:
    """k SimCLR steps of a small ResNet on fixed images; BN in eval mode so its statistics do not depend on the split."""
    from simclr_hpc import distributed as D
    from simclr_hpc.config import load_config
    from simclr_hpc.losses import nt_xent
    from simclr_hpc.models import build_simclr
    from simclr_hpc.train.engine import derive_batch
    from simclr_hpc.train.engines import create_engine
    from simclr_hpc.train.optim import build_optimizer, lr_at, scaled_lr

    cfg = load_config(overrides=args["overrides"])
    engine = create_engine(cfg)
    per_device, micro, accumulation = derive_batch(
        cfg.train.global_batch, engine.world_size, cfg.train.max_batch_per_device
    )
    torch.manual_seed(0)
    model = build_simclr(cfg.model)
    peak = scaled_lr(cfg.optim, cfg.train.global_batch)
    optimizer = build_optimizer(model, cfg.optim, peak)
    model, optimizer = engine.prepare(model, optimizer, micro, accumulation)
    model.eval()  # BN uses running statistics: the same function on every rank and in one process
    gen = torch.Generator().manual_seed(1)
    losses = []
    for step in range(args["steps"]):
        x_a = torch.randn(cfg.train.global_batch, 3, 16, 16, generator=gen)
        x_b = x_a + 0.1 * torch.randn(x_a.shape, generator=gen)
        sl = slice(engine.rank * per_device, (engine.rank + 1) * per_device)
        engine.set_lr(optimizer, lr_at(step, peak, args["steps"], 1))
        gather = D.all_gather_with_grad if engine.world_size > 1 else None
        with engine.autocast():  # a no-op on CPU; on a GPU, bf16 (DeepSpeed's bf16 weights need it)
            z = model(torch.cat([x_a[sl], x_b[sl]]).to(engine.device))
        loss = nt_xent(z[:per_device], z[per_device:], cfg.pretrain.temperature, gather=gather, rank=engine.rank)
        engine.backward(loss)
        engine.optimizer_step(optimizer)
        losses.append(float(D.all_reduce_sum(loss.detach().clone()).item()) / engine.world_size)
    params = {k: v.detach().clone() for k, v in engine.unwrap(model).state_dict().items()}
    engine.close()
    return {"params": params, "losses": losses, "world": engine.world_size}


def case_zero_state(args: dict) -> dict:
    """ZeRO optimizer state in torch's format: take one AdamW step (or load ``args["load"]``), then gather it."""
    from simclr_hpc.config import load_config
    from simclr_hpc.losses import nt_xent
    from simclr_hpc.models import build_simclr
    from simclr_hpc.train.engine import derive_batch
    from simclr_hpc.train.engines import create_engine
    from simclr_hpc.train.optim import build_optimizer

    cfg = load_config(overrides=args["overrides"])
    engine = create_engine(cfg)
    per_device, micro, accumulation = derive_batch(cfg.train.global_batch, engine.world_size, 0)
    torch.manual_seed(0)
    model = build_simclr(cfg.model)
    loaded = torch.load(args["load"], weights_only=True) if args.get("load") else None
    model, optimizer = engine.prepare(model, build_optimizer(model, cfg.optim, 0.01), micro, accumulation, loaded)
    if loaded is None:
        x = torch.randn(2 * per_device, 3, 16, 16, generator=torch.Generator().manual_seed(engine.rank))
        z = model(x)
        engine.backward(nt_xent(z[:per_device], z[per_device:], 0.2))
        engine.optimizer_step(optimizer)
    state = engine.optimizer_state(optimizer)
    engine.close()
    return {"state": state, "world": engine.world_size}


def case_engine_protocol(args: dict) -> dict:
    """Two half-batch micro-steps of a linear model through the engine's interface, recording the weights after each
    ``backward`` and after ``optimizer_step`` (for tests/train/test_engine.py)."""
    from torch import nn

    from simclr_hpc.config import load_config
    from simclr_hpc.train.engines import create_engine

    engine = create_engine(load_config(overrides=args["overrides"]))
    torch.manual_seed(0)
    model = nn.Linear(3, 2, bias=False)
    start = model.weight.detach().clone()
    model, optimizer = engine.prepare(model, torch.optim.SGD(model.parameters(), lr=1.0), micro=2, accumulation=2)
    engine.set_lr(optimizer, args["lr"])
    lrs = [group["lr"] for group in optimizer.param_groups]
    x, y = torch.tensor(args["x"]), torch.tensor(args["y"])
    seen = []
    for part in (slice(0, 2), slice(2, 4)):
        with engine.no_sync(model, last=part.start == 2):
            engine.backward(nn.functional.mse_loss(model(x[part].to(engine.device)), y[part]) * 0.5)
        seen.append(engine.unwrap(model).weight.detach().clone())
    grad = engine.unwrap(model).weight.grad.detach().clone()
    engine.optimizer_step(optimizer)
    after = engine.unwrap(model).weight
    cleared = after.grad is None or not bool(after.grad.any())
    out = {"start": start, "seen": seen, "grad": grad, "after": after.detach().clone(), "lrs": lrs, "cleared": cleared}
    engine.close()
    return out


def case_stage(args: dict) -> dict:
    """A whole stage through run_stage (what a Slurm task runs)."""
    from simclr_hpc.config import load_config
    from simclr_hpc.train.runner import run_stage

    return run_stage(args["stage"], load_config(args.get("config"), args["overrides"]))


def case_gather(args: dict) -> dict:
    """Uneven shares of features gathered as tensors, and eval counts summed over ranks (train/evaluate.py, knn.py)."""
    import torch.distributed as dist

    from simclr_hpc import distributed as D
    from simclr_hpc.train.evaluate import gather_rows, logits_metrics
    from simclr_hpc.train.knn import knn_hits, knn_metrics

    dist.init_process_group("gloo")
    rank, world = D.rank(), D.world_size()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, generator=gen), torch.arange(5) % 3
    logits = torch.randn(5, 7, generator=gen)
    share = [slice(0, 3), slice(3, 3), slice(3, 5)][rank] if world == 3 else slice(0, 5)
    out = {
        "x": gather_rows(x[share]),
        "y": gather_rows(y[share]),
        "metrics": logits_metrics(logits[share], y[share], 7),
    }
    hits = D.all_reduce_sum(knn_hits(x[share], y[share], x, y, 3, ks=(1, 3)))
    out["knn"] = knn_metrics(hits, 5, 5, 3, ks=(1, 3))
    dist.destroy_process_group()
    return out


def main() -> None:
    case, out = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    result = globals()[f"case_{case}"](args)
    import os

    torch.save(result, f"{out}.rank{os.environ.get('RANK', '0')}")


if __name__ == "__main__":
    main()
