"""Metrics lines, progress display and run logging.

``metrics.jsonl`` gets one JSON line per logged step. On a terminal a rich progress bar shows the run; in a batch log
(no TTY) plain lines are printed every ``log_every_steps`` so a Slurm ``.out`` file reads well.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from simclr_hpc.fsutil import dumps_json

log = logging.getLogger("simclr_hpc")


def setup_logging(rank: int) -> None:
    """Plain timestamped lines on stderr; only rank 0 speaks at INFO, other ranks only warn."""
    level = logging.INFO if rank == 0 else logging.WARNING
    root = logging.getLogger("simclr_hpc")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def truncate_after(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (a resumed run re-does those steps; no step may appear twice)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue  # a line cut off by a kill mid-write
    path.write_text("".join(f"{line}\n" for line in keep))


class MetricsWriter:
    """Appends metric lines (rank 0 only) and drives the progress display."""

    def __init__(self, path: Path | None, total_steps: int, start_step: int, enabled: bool, label: str):
        self.path = path
        self.enabled = enabled
        self.total = total_steps
        self.label = label
        self._progress = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
            )
            self._task = self._progress.add_task(label, total=total_steps, completed=start_step, info="")
            self._progress.start()

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        line = {"step": step, "time": round(time.time(), 3), **values}
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(dumps_json(line) + "\n")
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)
        else:
            log.info("%s step %d/%d %s", self.label, step, self.total, info)

    def advance(self, step: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
