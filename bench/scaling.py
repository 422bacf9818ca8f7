"""Scaling: pretrain images/s for 1 vs 2 processes on this machine (gloo), and 1 vs 2 nodes on the local Slurm test
cluster (started for the measurement when it is down and this is root with Slurm installed, and stopped again).

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
import time
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
    """Why the 2-node measurement cannot run, or None when the local test cluster is up (started here if need be)."""
    if _cluster_healthy():
        return None
    if not shutil.which("sbatch") or not shutil.which("slurmd"):
        return "Slurm is not installed (run `make slurm-deps` as root)"
    if os.geteuid() != 0:
        return "the local Slurm test cluster is down and starting it needs root (`sudo make slurm-up`)"
    return "the local Slurm test cluster could not be started (see `make slurm-up`)"


def _cluster_healthy() -> bool:
    if not shutil.which("scontrol"):
        return False
    if subprocess.run(["scontrol", "ping"], capture_output=True, text=True).returncode != 0:
        return False
    states = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True).stdout.split()
    return "node1" in states and "node2" in states and not any(t.rstrip("*") in ("down", "drained") for t in states)


def _start_cluster() -> bool:
    """Start the local test cluster when it is down and this is root with Slurm installed; True if started here."""
    if _cluster_healthy() or os.geteuid() != 0 or not shutil.which("slurmd"):
        return False
    env = {**os.environ, "SLURM_LOCAL_ACCOUNTING": "1", "SLURM_LOCAL_NO_INSTALL": "1"}
    subprocess.run(["bash", str(REPO / "slurm/testing/setup.sh"), "netns", "2"], env=env, capture_output=True,
                   text=True, timeout=180)
    return _cluster_healthy()


def _run_nodes(nodes: int, shards: Path, out: Path, s: dict, counter: list) -> float:
    """One ``simclr-hpc submit pretrain --nodes N`` on the test cluster (one task per node); its training images/s."""
    counter.append(1)
    name = f"n{nodes}-{len(counter)}"
    cmd = [sys.executable, "-m", "simclr_hpc.cli.main", "submit", "pretrain", "--profile", "local",
           "--nodes", str(nodes), "--gpus-per-node", "1",
           "--set", f"run.root={out}", "--set", "run.study=bench", "--set", f"run.name={name}",
           "--set", f"data.shards={shards}", "--set", "data.num_workers=0", "--set", f"model.width={s['width']}",
           "--set", f"train.global_batch={s['per_device'] * nodes}", "--set", f"train.steps={s['steps']}",
           "--set", f"train.ckpt_every_steps={s['steps']}", "--set", f"train.log_every_steps={s['steps']}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"submit --nodes {nodes} failed: {proc.stderr.strip()[-2000:]}")
    result_path = out / "bench" / "pretrain" / name / "result.json"
    deadline = time.monotonic() + 600
    while not result_path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"--nodes {nodes}: no result.json after 600 s ({proc.stdout.strip()})")
        time.sleep(1.0)
    result = json.loads(result_path.read_text())
    assert result["world_size"] == nodes, result["world_size"]
    return float(result["images_per_s"])


def _two_nodes_row(shards: Path, out: Path, s: dict, reps: int) -> Row:
    case = "1 vs 2 nodes, local Slurm test cluster"
    started = _start_cluster()
    try:
        reason = slurm_unavailable_reason()
        if reason:
            return Row("scaling", case, "efficiency", None, None, None, None, f"not measured: {reason}")
        counter: list = []
        rates = alternate({n: (lambda n=n: _run_nodes(n, shards, out, s, counter)) for n in (1, 2)}, reps, warmup=0)
    finally:
        if started:
            subprocess.run(["bash", str(REPO / "slurm/testing/teardown.sh")], capture_output=True, timeout=120)
    one, two = median(rates[1]), median(rates[2])
    eff = two / (2 * one)
    log(f"scaling: 1 node {one:.1f} img/s, 2 nodes {two:.1f} img/s, efficiency {eff:.2f}")
    return Row("scaling", case, "images/s (2 nodes) / (2 x images/s (1 node))", two, one, eff, None,
               f"`submit pretrain --nodes N --gpus-per-node 1`, ResNet-18 w{s['width']}, {s['per_device']}/rank, "
               f"{s['steps']} steps, gloo over the namespaces' bridge, {reps} job(s) each; both 'nodes' share this "
               f"machine's {os.cpu_count()} cores, so this is launcher + network overhead, not cluster scaling "
               f"(no target)")


def run(reps: int = 1, n_images: int = 256, **overrides) -> list[Row]:
    s = {**SETTINGS, **overrides}
    counter: list = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        folder = make_imagefolder(Path(tmp) / "folder", n_images, 32, 32, "png")
        shards = make_shards(folder, Path(tmp) / "shards", shard_size=64)
        out = Path(tmp) / "runs"
        rates = alternate({w: (lambda w=w: _run_world(w, shards, out, s, counter)) for w in (1, 2)}, reps, warmup=0)
        nodes_row = _two_nodes_row(shards, out, s, reps)
    one, two = median(rates[1]), median(rates[2])
    eff = two / (2 * one)
    log(f"scaling: 1 process {one:.1f} img/s, 2 processes {two:.1f} img/s, efficiency {eff:.2f}")
    return [Row("scaling", "1 vs 2 processes, this machine (gloo)", "images/s (2) / (2 x images/s (1))", two, one, eff,
                None, f"ResNet-18 w{s['width']}, {s['per_device']}/rank, {s['steps']} steps, 1 thread/rank, {reps} run(s) "
                f"each; {os.cpu_count()} shared cores: 2 ranks cannot scale here (no target)"),
            nodes_row]


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
