"""Gradient caching: peak memory of one pretrain step at a fixed global batch as the chunk (micro-batch) shrinks.

Each chunk size runs once in a fresh subprocess that resets the kernel's resident-set high-water mark
(``/proc/self/clear_refs``) after building the model and batch, runs one step of the real ``PretrainTask.step``
(exact full-batch NT-Xent via gradient caching when chunk < batch), and reports the VmHWM increase. The baseline row is
the step without caching (chunk = batch). The loss must be the same at every chunk size: it is the same loss.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import Row, log

BATCH = 256
CHUNKS = (256, 64, 16)


def _child(chunk: int) -> None:
    import torch

    from simclr_hpc.config import load_config
    from simclr_hpc.train.engines import create_engine
    from simclr_hpc.train.stages import PretrainTask
    from simclr_hpc.train.task import StageContext

    torch.set_num_threads(1)
    cfg = load_config(overrides=["model.width=0.25", f"train.global_batch={BATCH}"])
    engine = create_engine(cfg)
    torch.manual_seed(0)
    task = PretrainTask(StageContext(cfg, engine, Path(tempfile.mkdtemp()), BATCH, chunk, BATCH // chunk))
    model = task.build().eval()  # BN on running statistics, so every chunk size computes the same loss
    x = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batch = {"views": (x, x.flip(-1)), "y": torch.zeros(BATCH), "skipped": 0}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmHWM")
    loss = task.step(model, batch)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - before) / 1024.0, "loss": loss.item()}))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak(chunk: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.grad_cache", str(chunk)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(chunks=CHUNKS) -> list[Row]:
    base = peak(chunks[0])
    rows = []
    for chunk in chunks[1:]:
        got = peak(chunk)
        log(f"grad cache chunk {chunk}: {got['peak_mb']:.0f} MB vs {base['peak_mb']:.0f} MB")
        assert abs(got["loss"] - base["loss"]) < 1e-4 * abs(base["loss"]), (got, base)
        rows.append(
            Row(
                "grad_cache",
                f"global batch {BATCH}, chunk {chunk} vs {chunks[0]}",
                "peak RSS added, MB",
                got["peak_mb"],
                base["peak_mb"],
                got["peak_mb"] / base["peak_mb"],
                "<= 0.9",
                f"ResNet-18 w0.25 32px, one step; loss {got['loss']:.6f} = {base['loss']:.6f} (same loss)",
            )
        )
    return rows


if __name__ == "__main__":
    _child(int(sys.argv[1]))
