"""Metrics lines, progress display and run logging.

``metrics.jsonl`` gets one JSON line per logged step, and the tracking backends of ``log.backends`` (``tracking.py``)
the same scalars under ``train/<name>``. On a terminal a rich progress bar shows the run; in a batch log (no TTY) plain
lines with elapsed time and ETA are printed every ``log_every_steps`` so a Slurm log reads well.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from simclr_hpc.fsutil import dumps_json, write_failed, write_text_atomic

log = logging.getLogger("simclr_hpc")

VERBOSE_ENV = "SIMCLR_HPC_VERBOSE"
"""Set to 1 by ``simclr-hpc --verbose``; inherited by the jobs it starts, which then keep other libraries' output."""
THIRD_PARTY_LOGGERS = ("DeepSpeed", "accelerate", "torch.distributed")


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_QUIET = _ErrorsOnly()


def quiet_third_party() -> None:
    """Unless ``$SIMCLR_HPC_VERBOSE`` is 1: drop other libraries' warnings and their loggers' lines below ERROR.

    DeepSpeed's "Setting accelerator to CPU" and the like tell a user nothing they can act on. A filter (not a level) is
    used because DeepSpeed sets its logger's level when it is imported, which may be after this runs."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return
    for name in THIRD_PARTY_LOGGERS:
        if _QUIET not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_QUIET)
    # Only warnings raised outside this package; ours are meant to be read.
    warnings.filterwarnings("ignore", module=r"(?!simclr_hpc)")


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


def truncate_after(path: Path, step: int) -> int:
    """Drop lines logged after ``step`` (a resumed run re-does those steps; no step may appear twice).

    Returns the last step the file held before (0 if none): how far an earlier attempt got."""
    if not path.exists():
        return 0
    keep, last = [], 0
    for line in path.read_text().splitlines():
        try:
            logged = json.loads(line).get("step", 0)
        except ValueError:
            continue  # a line cut off by a kill mid-write
        last = max(last, logged)
        if logged <= step:
            keep.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in keep))  # a full disk must not cut the history short
    return last


def append_line(path: Path, text: str) -> None:
    """Append ``text`` and a newline to ``path``; a failed write (a full disk) is cut back to the whole lines it had
    and becomes one AtomicWriteError naming the file."""
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "a") as f:
            f.write(text + "\n")
    except OSError as err:
        with open(path, "r+") as f:
            f.truncate(size)
        raise write_failed(path, err) from err


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``: short enough for a progress line."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class MetricsWriter:
    """Appends metric lines and feeds the tracking backends (rank 0 only), and drives the progress display.

    ``backends`` are already opened (``tracking.open_backends``); the writer closes them."""

    def __init__(
        self,
        path: Path | None,
        total_steps: int,
        start_step: int,
        enabled: bool,
        label: str,
        backends: list | None = None,
    ):
        self.path = path
        self.enabled = enabled
        self.total = total_steps
        self.label = label
        self.backends = list(backends or [])
        self._start_step, self._t0 = start_step, time.monotonic()
        self._progress = None
        if enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._task = self._progress.add_task(label, total=total_steps, completed=start_step, info="")
            self._progress.start()

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        line = {"step": step, "time": round(time.time(), 3), **values}
        if self.path is not None:
            append_line(self.path, dumps_json(line))
        for backend in self.backends:
            backend.log(step, {f"train/{k}": v for k, v in values.items()})
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)
        else:
            log.info("%s step %d/%d %s %s", self.label, step, self.total, info, self.timing(step))

    def timing(self, step: int) -> str:
        """``elapsed 1m05s eta 3m20s``: this attempt's time, and the rest at this attempt's pace so far."""
        elapsed = time.monotonic() - self._t0
        done = step - self._start_step
        eta = format_duration(elapsed / done * (self.total - step)) if done > 0 else "?"
        return f"elapsed {format_duration(elapsed)} eta {eta}"

    def log_final(self, step: int, metrics: dict) -> None:
        """The run's evaluation metrics, to the tracking backends as ``eval/<name>`` at the last step."""
        if not self.enabled:
            return
        numbers = {f"eval/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for backend in self.backends:
            backend.log(step, numbers)

    def flush(self) -> None:
        """Make what the backends were given durable: called before every checkpoint."""
        for backend in self.backends:
            backend.flush()

    def advance(self, step: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        for backend in self.backends:
            backend.close()
        self.backends = []
