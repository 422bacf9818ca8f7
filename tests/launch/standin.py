"""A stand-in for ``simclr_hpc.train.runner.run_stage`` used by the launch tests: small, fast, and observable.

``run_stage(stage, cfg)`` runs ``cfg.train.steps`` steps of ``STEP_S`` seconds each. Rank 0 records every step it
executes in ``steps.log`` and its progress in ``progress.json`` (written atomically after each step, like a checkpoint
every step), so a requeued job resumes where it stopped and a test can see that no step ran twice. With several tasks it
does a torch gloo all_reduce over the exported MASTER_ADDR/MASTER_PORT to prove the rendezvous, and rank 0 writes
``result.json`` with the world size and every rank's hostname.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

STEP_S = float(os.environ.get("STANDIN_STEP_S", "0.5"))


def _atomic_write(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def run_stage(stage: str, cfg) -> dict:
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    run_dir = cfg.run_dir(stage)
    run_dir.mkdir(parents=True, exist_ok=True)
    hosts = [socket.gethostname()]
    if world > 1:
        import datetime

        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        names = [None] * world
        dist.all_gather_object(names, socket.gethostname())
        total = torch.tensor([float(rank + 1)])
        dist.all_reduce(total)
        hosts = names
        assert total.item() == world * (world + 1) / 2
    progress_path = run_dir / "progress.json"
    start = json.loads(progress_path.read_text())["step"] if progress_path.exists() else 0
    for step in range(start, cfg.train.steps):
        time.sleep(STEP_S)
        if rank == 0:
            with open(run_dir / "steps.log", "a") as f:
                f.write(f"{step} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
            _atomic_write(progress_path, {"step": step + 1})
    result = {
        "stage": stage,
        "run": cfg.run.name,
        "world_size": world,
        "hostnames": hosts,
        "resumed_from": start,
        "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "local_world_size": int(os.environ["LOCAL_WORLD_SIZE"]),
    }
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        _atomic_write(run_dir / "result.json", result)
    return result
