"""Save at the time-limit signal, safely: the signal handler only sets a flag; the training loop acts on it.

Slurm sends USR2 ``--signal=USR2@signal_delay_s`` seconds before a job's time limit (and a preempting scheduler does
the same). Writing a checkpoint inside the handler would be unsafe: it runs between two arbitrary bytecodes of the
loop (mid optimizer step, mid collective), and the other ranks get the signal at a different moment. So the handler
records that the signal came, and at its next step boundary the loop asks every rank through one collective
(``stop_requested``), so that all ranks stop after the same step, write one checkpoint together and raise
``Preempted``; the launcher then asks for the job to be requeued and the next run resumes from that step.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

SIGNAL = signal.SIGUSR2
_flag = threading.Event()


class Preempted(Exception):
    """The run stopped at the preemption signal after writing a checkpoint of ``step``; requeue it to resume."""

    def __init__(self, step: int, run_dir: Path):
        super().__init__(f"stopped at the preemption signal with a checkpoint of step {step} in {run_dir}")
        self.step = step
        self.run_dir = run_dir


def _handler(signum, frame) -> None:
    _flag.set()  # nothing else: async-signal context


def install():
    """Make USR2 set the flag while the loop trains; returns the handler it replaces (give it to ``restore``).

    The replaced one is usually submitit's, which checkpoints the call and requeues at once: right outside the loop
    (start-up, evaluation), where there is no step to finish, but inside it that would lose the steps since the last
    checkpoint. Main thread only (where Python runs signal handlers); elsewhere a no-op that returns None.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(SIGNAL, _handler)


def restore(previous) -> None:
    """Put back the handler ``install`` replaced (nothing if it replaced none)."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(SIGNAL, previous)


def signalled() -> bool:
    """This process received the signal (since ``install`` or the last ``clear``)."""
    return _flag.is_set()


def clear() -> None:
    _flag.clear()


def stop_requested() -> bool:
    """Whether any rank got the signal: one sum over the ranks, so every rank returns the same answer at the same
    step (a rank that stops alone would leave the others blocked in their next collective). The sum runs on the host
    (``distributed.host_sum``): under NCCL a vote through the GPU would wait for the whole step, every step."""
    # Imported here, not at the top: the launcher installs the handler before torch has been imported.
    from simclr_hpc import distributed as D

    return D.host_sum([1 if _flag.is_set() else 0])[0] > 0


def steps_redone(metrics_path: Path, start: int) -> int:
    """Steps an earlier attempt ran past the checkpoint this run resumes from (``start``): the highest step it logged
    in ``metrics.jsonl`` minus ``start``; 0 for a fresh run. Read before the resumed run drops those lines."""
    if start == 0 or not metrics_path.exists():
        return 0
    last = start
    for line in metrics_path.read_text().splitlines():
        try:
            last = max(last, int(json.loads(line).get("step", 0)))
        except (ValueError, TypeError, AttributeError):
            continue  # a line cut off by a kill mid-write
    return last - start
