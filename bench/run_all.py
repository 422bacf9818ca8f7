"""``make bench``: run every benchmark, print the table, and append a dated section to ``bench/results.md``.

Each benchmark alternates ours and its baseline and reports medians and the ratio; this module only collects rows,
adds the machine and versions, and marks each ratio PASS or MISS against its target (rows without a target are
reported as measured; rows that could not be measured say why). Sized to finish within 30 minutes on 2 quiet cores
(the demo row alone is up to 10, the time-to-accuracy row about 5).
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from bench._common import Row, log

RESULTS = Path(__file__).resolve().parent / "results.md"


def machine() -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    import lightly
    import torch
    import torchvision

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightly": lightly.__version__,
        "python": platform.python_version(),
        "load average at start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | case | metric | ours | baseline | ratio | target | result | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = {True: "PASS", False: "**MISS**", None: "-" if r.ratio is not None else "not measured"}[r.passed]
        lines.append(
            f"| {r.bench} | {r.case} | {r.metric} | {_fmt(r.ours)} | {_fmt(r.baseline)} | {_fmt(r.ratio)} | "
            f"{r.target or '-'} | {verdict} | {r.note} |"
        )
    return "\n".join(lines)


def main(only: list[str] | None = None) -> int:
    """Run every benchmark (or those named in ``only``, e.g. ``python -m bench.run_all demo``) and append the table."""
    from bench import (
        demo,
        device_decode,
        end_to_end,
        eval_memory,
        grad_cache,
        loss,
        pipeline,
        scaling,
        sharding,
        time_to_accuracy,
        train_step,
    )

    benches = (
        ("loss", loss),
        ("pipeline", pipeline),
        ("train_step", train_step),
        ("end_to_end", end_to_end),
        ("scaling", scaling),
        ("grad_cache", grad_cache),
        ("sharding", sharding),
        ("eval_memory", eval_memory),
        ("device_decode", device_decode),
        ("time_to_accuracy", time_to_accuracy),
        ("demo", demo),
    )
    unknown = sorted(set(only or []) - {name for name, _ in benches})
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; use any of {', '.join(n for n, _ in benches)}", file=sys.stderr
        )
        return 2
    info = machine()
    started = datetime.datetime.now().astimezone()
    rows: list[Row] = []
    t0 = time.perf_counter()
    for name, mod in benches:
        if only and name not in only:
            continue
        t = time.perf_counter()
        try:
            rows += mod.run()
        except Exception as exc:
            traceback.print_exc()
            rows.append(
                Row(name, "all", "-", None, None, None, None, f"not measured: crashed ({type(exc).__name__}: {exc})")
            )
        log(f"{name}: {time.perf_counter() - t:.0f}s")
    if not only:
        import torch

        rows.append(
            Row(
                "gpu",
                "ResNet-50 224px bf16, DDP (with and without device augmentation) and ZeRO-2",
                "images/s per GPU, MFU",
                None,
                None,
                None,
                None,
                "run separately on a GPU machine: `python -m bench.gpu` (scripts/gpu_check.sh); "
                + ("CUDA present but not run by make bench" if torch.cuda.is_available() else "no CUDA here"),
            )
        )
    total = time.perf_counter() - t0
    misses = [r for r in rows if r.passed is False]
    section = [
        f"## {started:%Y-%m-%d %H:%M %Z}" + (f" (only: {', '.join(only)})" if only else ""),
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + f". Wall time {total / 60:.1f} min.",
        "",
        "Ratios are ours / baseline (time rows: lower is better; images/s rows: higher is better). Medians of "
        "alternating runs on a shared machine; absolute numbers are noise, ratios are the result.",
        "",
        table(rows),
        "",
        (
            "Missed targets: "
            + "; ".join(f"{r.bench} {r.case} (ratio {_fmt(r.ratio)}, target {r.target})" for r in misses)
            + "."
        )
        if misses
        else "Every target met.",
        "",
    ]
    text = "\n".join(section)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by `make bench` (`python -m bench.run_all`).\n\n")
    with RESULTS.open("a") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
