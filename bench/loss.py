"""NT-Xent forward+backward: ``simclr_hpc.losses.nt_xent`` vs lightly's ``NTXentLoss``, N x D=128 on CPU.

Times: both implementations alternate on the same inputs in this process, after a warm-up round; medians. Values: the
two losses must agree (asserted) so the comparison is of the same computation.

Peak memory: torch allocates outside Python's allocator, so ``tracemalloc`` sees nothing. Each (implementation, N)
runs once in a fresh subprocess, which resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``),
reads its resident size, runs forward+backward, and reads the high-water mark again (``VmHWM``): the difference is the
loss's own peak (the similarity matrix and whatever autograd keeps of it). A high-water mark cannot miss a short-lived
peak; the reset is needed because importing torch peaks higher than a small loss does (plain ``ru_maxrss`` would
report 0 there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from bench._common import REPO, Row, alternate, log, median, timed

D = 128
TEMPERATURE = 0.5
SIZES = (256, 1024, 4096)


def _impls():
    from lightly.loss import NTXentLoss

    from simclr_hpc.losses import nt_xent

    lightly_loss = NTXentLoss(temperature=TEMPERATURE)
    return {"ours": lambda a, b: nt_xent(a, b, TEMPERATURE), "lightly": lambda a, b: lightly_loss(a, b)}


def _inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(n)
    return torch.randn(n, D, generator=gen), torch.randn(n, D, generator=gen)


def _fwd_bwd(fn, a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = fn(a, b)
    loss.backward()
    return float(loss.detach())


def peak_rss_mb(impl: str, n: int) -> float:
    """Peak resident memory added by one forward+backward of ``impl`` at ``n``, measured in a fresh subprocess (MB)."""
    cmd = [sys.executable, "-m", "bench.loss", "--peak-rss", impl, str(n)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-rss subprocess failed: {proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"])


def _child_peak_rss(impl: str, n: int) -> None:
    fn = _impls()[impl]
    a, b = _inputs(n)
    _fwd_bwd(fn, a[:8], b[:8])  # load kernels and lazy modules before the baseline reading
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status_kb("VmRSS")
    _fwd_bwd(fn, a, b)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - before) / 1024.0}))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run(sizes=SIZES, reps: int | None = None, memory: bool = True) -> list[Row]:
    impls = _impls()
    rows = []
    for n in sizes:
        a, b = _inputs(n)
        values = {name: _fwd_bwd(fn, a, b) for name, fn in impls.items()}
        assert abs(values["ours"] - values["lightly"]) <= 1e-5 * abs(values["lightly"]), (
            f"N={n}: losses differ {values}"
        )
        k = reps if reps is not None else (3 if n >= 4096 else 7)
        times = alternate({name: (lambda fn=fn: timed(lambda: _fwd_bwd(fn, a, b))) for name, fn in impls.items()}, k)
        ours, theirs = median(times["ours"]), median(times["lightly"])
        target = "<= 0.5" if n >= 4096 else "<= 1.0"
        rows.append(
            Row(
                "loss",
                f"N={n} D={D}",
                "fwd+bwd median s",
                ours,
                theirs,
                ours / theirs,
                target,
                f"loss {values['ours']:.6f} = lightly {values['lightly']:.6f}; {k} reps",
            )
        )
        log(f"loss N={n}: ours {ours:.4f}s lightly {theirs:.4f}s ratio {ours / theirs:.3f}")
        if memory:
            mem = {name: peak_rss_mb(name, n) for name in impls}
            rows.append(
                Row(
                    "loss",
                    f"N={n} D={D}",
                    "peak RSS added, MB",
                    mem["ours"],
                    mem["lightly"],
                    mem["ours"] / mem["lightly"] if mem["lightly"] > 0 else None,
                    None,
                    "fresh subprocess per (impl, N), VmHWM delta after a reset; no target",
                )
            )
            log(f"loss N={n}: peak MB ours {mem['ours']:.1f} lightly {mem['lightly']:.1f}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peak-rss", nargs=2, metavar=("IMPL", "N"))
    args = parser.parse_args()
    if args.peak_rss:
        _child_peak_rss(args.peak_rss[0], int(args.peak_rss[1]))
    else:
        for row in run():
            print(row.as_dict())
