"""The GPU checks of issue 21, one function each, run by ``scripts/gpu_check.sh`` (which installs ``.whl/`` first).

    python scripts/gpu_checks.py [--no-cuda [--jobs N]] [--only A,B] [--skip A,B] [--out DIR]

Each check runs in its own process with its own time limit (a CUDA or NCCL failure cannot take the others down), and
the last lines say which checks ran, which passed, which failed and which were skipped, and why. ``--no-cuda`` runs
every check on the CPU at a tiny size (the CUDA-only ones are skipped and named): what ``make test`` runs
(``tests/test_gpu_check.py``), so the script a GPU machine runs is known to work up to the device itself.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import gpu_check_steps as steps  # noqa: E402  (beside this file)

CHECKS: dict[str, tuple[str, int, str]] = {
    # name: (where it runs: "any" or "cuda", time limit on a GPU in s, what it shows)
    "doctor": ("any", 60, "simclr-hpc doctor --offline: GPU, bf16, NCCL as the tool sees them"),
    "wheels": ("any", 60, "pydantic, submitit, webdataset, deepspeed, pytest import (from .whl/ on a GPU machine)"),
    "device-audit": ("any", 120, "no tensor of a step or the monitor is created off its inputs' device"),
    "binding": ("any", 120, "CUDA_VISIBLE_DEVICES=0 LOCAL_RANK=3 trains on cuda:0 (both engines)"),
    "nccl": ("any", 90, "collectives on one rank, the gradient-keeping gather forward and backward"),
    "step-ddp": ("any", 120, "DDP engine: one bf16 LARS step, channels_last, bf16 autocast"),
    "step-ddp-fp32": ("any", 120, "DDP engine: the same step in fp32 (the reference)"),
    "step-zero0": ("any", 120, "DeepSpeed ZeRO-0 bf16: one LARS step from the same weights"),
    "step-zero1": ("any", 120, "DeepSpeed ZeRO-1 bf16: one LARS step from the same weights"),
    "step-zero2": ("any", 120, "DeepSpeed ZeRO-2 bf16: one LARS step from the same weights"),
    "zero-vs-ddp": ("any", 60, "the bf16 ZeRO steps are as close to DDP's fp32 step as DDP's bf16 one, and agree"),
    "fp16": ("any", 120, "fp16 with dynamic loss scaling: DDP (and DeepSpeed ZeRO-1 on a GPU)"),
    "pinned": ("cuda", 60, "training batches arrive in pinned memory"),
    "pretrain-cli": ("any", 180, "CLI pretrain: monitoring, gradient caching, a checkpoint and a resume"),
    "pretrain-compile": ("any", 240, "the same with train.compile=true"),
    "finetune": ("any", 120, "linear and full fine-tuning from the pretrain export"),
    "bench": ("any", 240, "ResNet-50 224 px SimCLR step: images/s, MFU, bf16/fp16/fp32, ZeRO-2 memory"),
    "pytest-gpu": ("cuda", 180, "tests/test_gpu.py, the gpu-marked tests (last: what the budget leaves)"),
}


AFTER = {
    "zero-vs-ddp": ("step-ddp", "step-ddp-fp32", "step-zero0", "step-zero1", "step-zero2"),
    "finetune": ("pretrain-cli",),
}
"""The checks each check reads the outputs of (they come before it in CHECKS)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_one(name: str, cuda: bool, out: Path) -> tuple[str, float, str]:
    """(status, seconds, note) of one check, run in a fresh process."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "PYTHONUNBUFFERED": "1"}
    if not cuda:
        env.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
    limit = CHECKS[name][1] * (1 if cuda else 3)
    cmd = [sys.executable, __file__, "--run", name, "--out", str(out)] + ([] if cuda else ["--no-cuda"])
    t0 = time.monotonic()
    log = out / "logs" / f"{name}.log"
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=limit)
        text, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        text, code = f"{err.stdout or ''}{err.stderr or ''}\ntimed out after {limit} s", -1
    log.write_text(text if isinstance(text, str) else text.decode(errors="replace"))
    notes = [line[6:] for line in text.splitlines() if line.startswith("NOTE: ")]
    if code == 0:
        return "passed", time.monotonic() - t0, "; ".join(notes)
    last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
    return "FAILED", time.monotonic() - t0, f"{last[0][:200]} (log: {log})"


def _run_all(only: list[str], skip: list[str], cuda: bool, out: Path, jobs: int) -> list[tuple[str, str, float, str]]:
    """Every check's row, in CHECKS order. ``jobs`` > 1 (CPU only): that many at once, each check started once the
    checks it reads (AFTER) are done."""
    rows: dict[str, tuple[str, str, float, str]] = {}

    def one(name: str) -> None:
        for before in AFTER.get(name, ()):
            done[before].wait()
        where, _, what = CHECKS[name]
        try:
            if (only and name not in only) or name in skip:
                rows[name] = (name, "skipped", 0.0, "not asked for (--only/--skip)")
            elif where == "cuda" and not cuda:
                rows[name] = (name, "skipped", 0.0, "needs CUDA")
            else:
                rows[name] = (name, *_run_one(name, cuda, out))
        finally:
            done[name].set()
        print(f"gpu_checks: {name}: {rows[name][1]} ({rows[name][2]:.0f} s) {what}. {rows[name][3]}", flush=True)

    done = {name: threading.Event() for name in CHECKS}
    with ThreadPoolExecutor(jobs) as pool:  # a check waits only on checks ahead of it: no pool of jobs deadlocks
        list(pool.map(one, CHECKS))
    return [rows[name] for name in CHECKS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cuda", action="store_true", help="every check on the CPU, tiny; CUDA-only ones skipped")
    parser.add_argument("--only", default="", help="comma-separated checks to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated checks not to run")
    parser.add_argument("--jobs", type=int, default=1, help="with --no-cuda: checks run at once (a GPU runs one)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "runs" / "gpu-check"))
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one check, in this process (what the driver starts)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    cuda = not args.no_cuda
    if args.run:
        return steps.run(args.run, cuda, out)
    import torch

    if cuda and not torch.cuda.is_available():
        print("gpu_checks: no CUDA device here; `bash scripts/gpu_check.sh --no-cuda` runs what needs none")
        return 2
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only + [n for n in args.skip.split(",") if n] if n not in CHECKS]
    if unknown:
        print(f"gpu_checks: unknown check(s) {', '.join(unknown)}; use {', '.join(CHECKS)}")
        return 2
    (out / "logs").mkdir(parents=True, exist_ok=True)
    steps.prepare_data(cuda, out)
    rows = _run_all(only, args.skip.split(","), cuda, out, 1 if cuda else max(1, args.jobs))
    print(f"\ngpu_checks on {'CUDA: ' + torch.cuda.get_device_name() if cuda else 'the CPU (--no-cuda)'}:")
    for name, status, seconds, note in rows:
        print(f"  {name:<17} {status:<8} {seconds:6.0f} s  {note}")
    counts = {s: sum(r[1] == s for r in rows) for s in ("passed", "FAILED", "skipped")}
    print(
        f"ran {counts['passed'] + counts['FAILED']}: {counts['passed']} passed, {counts['FAILED']} failed; "
        f"{counts['skipped']} skipped"
    )
    (out / "summary.json").write_text(
        json.dumps([dict(zip(("check", "status", "seconds", "note"), r)) for r in rows], indent=1)
    )
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    sys.exit(main())
