"""Scaling: pretrain images/s for 1 vs 2 processes on this machine (gloo), and 1 vs 2 nodes on the local Slurm test
cluster when it is up.

Processes are started the way a launcher starts them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the
environment, as ``tests/distributed_helpers.py`` does), each running ``simclr-hpc run pretrain``; the per-device batch
is fixed (weak scaling) and every rank gets one intra-op thread, as each rank would get its own cores on a cluster.
Efficiency = images/s(2) / (2 x images/s(1)). On a 2-core machine shared with other jobs, two ranks compete for the
same cores as everything else, so this measures overhead, not the scaling a cluster would show.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import REPO, Row, alternate, log, make_imagefolder, make_shards, median

SETTINGS = dict(width=0.125, per_device=16, steps=4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_world(world: int, shards: Path, out: Path, s: dict, counter: list) -> float:
    counter.append(1)
    name = f"w{world}-{len(counter)}"
    port = _free_port()
    args = ["-c", "from simclr_hpc.cli.main import main; main()", "run", "pretrain",
            "--set", f"run.root={out}", "--set", f"run.name={name}", "--set", f"data.shards={shards}",
            "--set", "data.num_workers=0", "--set", f"model.width={s['width']}",
            "--set", f"train.global_batch={s['per_device'] * world}", "--set", f"train.steps={s['steps']}",
            "--set", f"train.ckpt_every_steps={s['steps']}", "--set", f"train.log_every_steps={s['steps']}"]
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for rank, (p, text) in enumerate(zip(procs, logs)):
        if p.returncode != 0:
            raise RuntimeError(f"scaling world {world} rank {rank} failed:\n{text[-3000:]}")
    result = json.loads((out / "adhoc" / "pretrain" / name / "result.json").read_text())
    assert result["world_size"] == world, result["world_size"]
    return float(result["images_per_s"])


def slurm_unavailable_reason() -> str | None:
    """Why the 2-node measurement cannot run now, or None when the local test cluster is up and healthy."""
    if not shutil.which("sbatch") or not shutil.which("scontrol"):
        return "Slurm commands are not installed (bash slurm/testing/install_deps.sh)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0:
        first = (ping.stderr or ping.stdout).strip().splitlines()[-1:] or ["no answer"]
        return (f"the local Slurm test cluster is not running (scontrol ping: {first[0]}); start it with "
                f"`sudo bash slurm/testing/setup.sh`, which the benchmark does not do on a machine shared with others")
    return None


def run(reps: int = 1, n_images: int = 256, **overrides) -> list[Row]:
    s = {**SETTINGS, **overrides}
    counter: list = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        folder = make_imagefolder(Path(tmp) / "folder", n_images, 32, 32, "png")
        shards = make_shards(folder, Path(tmp) / "shards", shard_size=64)
        out = Path(tmp) / "runs"
        rates = alternate({w: (lambda w=w: _run_world(w, shards, out, s, counter)) for w in (1, 2)}, reps, warmup=0)
    one, two = median(rates[1]), median(rates[2])
    eff = two / (2 * one)
    log(f"scaling: 1 process {one:.1f} img/s, 2 processes {two:.1f} img/s, efficiency {eff:.2f}")
    rows = [Row("scaling", "1 vs 2 processes, this machine (gloo)", "images/s (2) / (2 x images/s (1))", two, one, eff,
                None, f"ResNet-18 w{s['width']}, {s['per_device']}/rank, {s['steps']} steps, 1 thread/rank, {reps} run(s) "
                f"each; {os.cpu_count()} shared cores: 2 ranks cannot scale here (no target)")]
    reason = slurm_unavailable_reason()
    rows.append(Row("scaling", "1 vs 2 nodes, local Slurm test cluster", "efficiency", None, None, None, None,
                    f"not measured: {reason}" if reason else
                    "not measured: the cluster is up, but its two nodes share this machine's cores, so the number "
                    "would repeat the 2-process row; run on a real cluster"))
    return rows


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
