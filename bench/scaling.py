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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, Row, alternate, log, make_imagefolder, make_shards, median
from tests.distributed_helpers import free_port

SETTINGS = dict(width=0.125, per_device=16, steps=4)


def _pretrain_sets(out: Path, name: str, shards: Path, s: dict, world: int) -> list[str]:
    """``--set`` arguments of one measured run: ``s['per_device']`` images per rank (weak scaling)."""
    sets = [
        f"run.root={out}",
        f"run.name={name}",
        f"data.shards={shards}",
        "data.num_workers=0",
        f"model.width={s['width']}",
        f"train.global_batch={s['per_device'] * world}",
        f"train.steps={s['steps']}",
        f"train.ckpt_every_steps={s['steps']}",
        f"train.log_every_steps={s['steps']}",
    ]
    return [arg for value in sets for arg in ("--set", value)]


def _images_per_s(result_path: Path, world: int) -> float:
    result = json.loads(result_path.read_text())
    assert result["world_size"] == world, result["world_size"]
    return float(result["images_per_s"])


def _efficiency_row(case: str, metric: str, rates: dict, note: str) -> Row:
    one, two = median(rates[1]), median(rates[2])
    log(f"scaling {case}: {one:.1f} img/s with 1, {two:.1f} img/s with 2, efficiency {two / (2 * one):.2f}")
    return Row("scaling", case, metric, two, one, two / (2 * one), None, note)


def _run_world(world: int, shards: Path, out: Path, s: dict, counter: list) -> float:
    counter.append(1)
    name = f"w{world}-{len(counter)}"
    port = free_port()
    args = [
        "-c",
        "from simclr_hpc.cli.main import main; main()",
        "run",
        "pretrain",
        *_pretrain_sets(out, name, shards, s, world),
    ]
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
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for rank, (p, text) in enumerate(zip(procs, logs)):
        if p.returncode != 0:
            raise RuntimeError(f"scaling world {world} rank {rank} failed:\n{text[-3000:]}")
    return _images_per_s(out / "adhoc" / "pretrain" / name / "result.json", world)


def _run_nodes(nodes: int, shards: Path, out: Path, s: dict, counter: list) -> float:
    """One ``simclr-hpc submit pretrain --nodes N`` on the test cluster (one task per node); its training images/s."""
    counter.append(1)
    name = f"n{nodes}-{len(counter)}"
    cmd = [
        sys.executable,
        "-m",
        "simclr_hpc.cli.main",
        "submit",
        "pretrain",
        "--profile",
        "local",
        "--nodes",
        str(nodes),
        "--gpus-per-node",
        "1",
        "--set",
        "run.study=bench",
        *_pretrain_sets(out, name, shards, s, nodes),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"submit --nodes {nodes} failed: {proc.stderr.strip()[-2000:]}")
    result_path = out / "bench" / "pretrain" / name / "result.json"
    deadline = time.monotonic() + 600
    while not result_path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"--nodes {nodes}: no result.json after 600 s ({proc.stdout.strip()})")
        time.sleep(1.0)
    return _images_per_s(result_path, nodes)


def _two_nodes_row(shards: Path, out: Path, s: dict, reps: int) -> Row:
    """1 vs 2 nodes on the local Slurm test cluster, started here (and stopped again) when it is down and can be."""
    from tests.slurm_cluster import stop_cluster, try_start_cluster

    case = "1 vs 2 nodes, local Slurm test cluster"
    started, reason = try_start_cluster()
    if reason:
        return Row("scaling", case, "efficiency", None, None, None, None, f"not measured: {reason.splitlines()[0]}")
    try:
        counter: list = []
        rates = alternate({n: (lambda n=n: _run_nodes(n, shards, out, s, counter)) for n in (1, 2)}, reps, warmup=0)
    finally:
        if started:
            stop_cluster()
    return _efficiency_row(
        case,
        "images/s (2 nodes) / (2 x images/s (1 node))",
        rates,
        f"`submit pretrain --nodes N --gpus-per-node 1`, ResNet-18 w{s['width']}, {s['per_device']}/rank, "
        f"{s['steps']} steps, gloo over the namespaces' bridge, {reps} job(s) each; both 'nodes' share this "
        f"machine's {os.cpu_count()} cores, so this is launcher + network overhead, not cluster scaling (no target)",
    )


def run(reps: int = 1, n_images: int = 256, **overrides) -> list[Row]:
    s = {**SETTINGS, **overrides}
    counter: list = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        folder = make_imagefolder(Path(tmp) / "folder", n_images, 32, 32, "png")
        shards = make_shards(folder, Path(tmp) / "shards", shard_size=64)
        out = Path(tmp) / "runs"
        rates = alternate({w: (lambda w=w: _run_world(w, shards, out, s, counter)) for w in (1, 2)}, reps, warmup=0)
        nodes_row = _two_nodes_row(shards, out, s, reps)
    return [
        _efficiency_row(
            "1 vs 2 processes, this machine (gloo)",
            "images/s (2) / (2 x images/s (1))",
            rates,
            f"ResNet-18 w{s['width']}, {s['per_device']}/rank, {s['steps']} steps, 1 thread/rank, "
            f"{reps} run(s) each; {os.cpu_count()} shared cores: 2 ranks cannot scale here (no target)",
        ),
        nodes_row,
    ]


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
