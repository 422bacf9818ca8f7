"""Start N local ranks of tests/dist_worker.py the way a launcher does (torchrun's environment variables)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    case: str, world: int, tmp_path: Path, args: dict | None = None, timeout: int = 300, extra_env: dict | None = None
) -> list[dict]:
    """Run ``case`` on ``world`` processes; return each rank's output, in rank order. Fails on any rank's error."""
    out = tmp_path / f"{case}-w{world}"
    port = free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "DS_ACCELERATOR": "cpu",
            **(extra_env or {}),
        }
        cmd = [sys.executable, "-m", "tests.dist_worker", case, str(out), json.dumps(args or {})]
        procs.append(
            subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError(f"{case}: ranks did not finish in {timeout}s") from None
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"{case} rank {rank} failed:\n{log[-3000:]}"
    return [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(world)]
