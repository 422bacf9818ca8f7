"""Shared bits of the launch tests: running the CLI in a subprocess, with or without Slurm on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "simclr_hpc.cli.main"]
STANDIN = "tests.launch.standin:run_stage"


def no_slurm_env(tmp_path: Path) -> dict:
    """Environment whose PATH holds no Slurm command (only this Python's directory): a laptop or CI box."""
    empty = tmp_path / "no-slurm-bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{empty}:{Path(sys.executable).parent}"
    return env


def cli(*args: str, env: dict | None = None, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``simclr-hpc ARGS`` in a fresh process (exit codes and stderr exactly as a user sees them)."""
    full_env = dict(env if env is not None else os.environ)
    full_env["PYTHONPATH"] = str(REPO)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
