"""``scripts/gpu_check.sh --no-cuda``: every check of the GPU script that needs no GPU runs here, on the CPU at a tiny
size, so the script a lent GPU machine runs once cannot rot unseen. (``pretrain-compile`` is left to
``tests/train/test_compile.py``, which compiles the same way at a smaller cost; ``pinned`` needs CUDA.) Two checks at a
time (``--jobs 2``, CPU only: a GPU runs them one by one): each is one single-threaded process, and CI has 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.distributed_helpers import REPO


def test_gpu_check_runs_every_part_that_needs_no_cuda_and_says_what_it_skipped(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--no-cuda", "--skip", "pretrain-compile", "--jobs", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rows = {row["check"]: row for row in json.loads((tmp_path / "summary.json").read_text())}
    skipped = {name: row["note"] for name, row in rows.items() if row["status"] == "skipped"}
    assert skipped == {
        "pinned": "needs CUDA",
        "pytest-gpu": "needs CUDA",
        "pretrain-compile": "not asked for (--only/--skip)",
    }, skipped
    assert all(row["status"] == "passed" for name, row in rows.items() if name not in skipped), rows
    assert "ran 15: 15 passed, 0 failed; 3 skipped" in proc.stdout
    assert "cosine of the bf16 updates" in rows["zero-vs-ddp"]["note"]
