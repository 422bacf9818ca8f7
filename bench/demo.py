"""``make demo``'s time: the whole embedded study (``simclr-hpc demo``, shard building included) against its 10-minute
budget on this machine, with its CPU time and the load beside it (on a shared machine the wall time is the load's)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

from bench._common import Row, log

BUDGET_S = 600.0


def run() -> list[Row]:
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "simclr_hpc.cli.main", "demo"], cwd=tmp, capture_output=True,
                              text=True, timeout=3600)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        return [Row("demo", "simclr-hpc demo", "wall s", None, None, None, None,
                    f"not measured: the demo failed (exit {proc.returncode}): {proc.stdout[-300:]}")]
    summary = next((line for line in proc.stdout.splitlines() if line.startswith("ran ")), "")
    log(f"demo: {wall:.0f} s wall, {cpu:.0f} s CPU, load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    note = (f"the whole study, shard building included; CPU time {cpu:.0f} s (all processes), {os.cpu_count()} cores, "
            f"load {load:.1f} at start and {os.getloadavg()[0]:.1f} at the end; {summary}; "
            "baseline = the 10-minute budget")
    return [Row("demo", "simclr-hpc demo (make demo)", "wall s", wall, BUDGET_S, wall / BUDGET_S, "<= 1.0", note)]


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
