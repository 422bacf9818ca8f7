"""What runs inside every job: a ``submitit.helpers.Checkpointable`` that sets up the environment and runs one stage."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

import submitit

from simclr_hpc.fsutil import pid_alive

RUN_TARGET = "simclr_hpc.train.runner:run_stage"
"""The function a job calls: ``run_stage(stage: str, cfg: Config) -> dict`` (resumes from its latest checkpoint)."""

# What torch.distributed raises in the surviving ranks when a peer process or its node is gone: gloo's "Connection
# closed/reset by peer" at once, or a collective that ran past train.collective_timeout_s ("Timed out"). Matched by
# name and text because launch/ imports no torch.
_LOST_PEER_TYPES = frozenset({"DistBackendError", "DistNetworkError", "DistStoreError"})
_LOST_PEER_TEXT = ("connection closed by peer", "connection reset by peer", "timed out", "broken pipe",
                   "communicator was aborted", "socket timeout")


def lost_peer(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) says another rank of the job vanished or stopped."""
    seen = 0
    while exc is not None and seen < 10:
        text = str(exc).lower()
        if type(exc).__name__ in _LOST_PEER_TYPES or any(marker in text for marker in _LOST_PEER_TEXT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def requeue_after_lost_peer(max_requeues: int) -> bool:
    """``scontrol requeue`` this Slurm job if it has restarts left; True if it was requeued.

    Slurm's ``--requeue`` only covers node failure and preemption as slurmctld sees them. A task killed on a live node
    (OOM killer, a crashed process, a node that dropped off the network but not out of Slurm) makes the other ranks
    fail instead, and the job would end FAILED with its checkpoints unused. Requeueing from the surviving rank makes the
    job start again and resume from its latest whole checkpoint; ``max_requeues`` (the profile's) bounds the retries,
    so a deterministic failure that looks like a lost peer ends after that many attempts.
    """
    job_id = os.environ.get("SLURM_JOB_ID")
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if not job_id or restarts >= max_requeues:
        return False
    array_id, task_id = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    target = f"{array_id}_{task_id}" if array_id and task_id else job_id
    proc = subprocess.run(["scontrol", "requeue", target], capture_output=True, text=True, timeout=60)
    print(f"simclr-hpc: a peer rank was lost; requeued job {target} (restart {restarts + 1} of at most {max_requeues}): "
          f"{proc.returncode == 0 and 'ok' or proc.stderr.strip()}", file=sys.stderr, flush=True)
    return proc.returncode == 0


def resolve_target(target: str):
    """``"package.module:function"`` -> the function (so tests can swap the run function without patching)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class StageJob(submitit.helpers.Checkpointable):
    """The callable submitit pickles into every job: ``StageJob(target)(stage, cfg_dict) -> result dict``.

    Every task (one per GPU) exports the torch distributed environment, then calls the target, which trains and resumes
    from the run's latest whole checkpoint by itself: a requeued job just calls it again.
    Local executor only (no Slurm to order jobs): ``wait_for`` emulates ``afterok`` with the ``(pid, result.json path)``
    of jobs that must succeed first; ``wait_exit`` emulates an array's parallelism cap with pids that must end first.
    """

    def __init__(self, target: str = RUN_TARGET, wait_for: list[tuple[int, str]] | None = None,
                 wait_exit: list[int] | None = None, max_requeues: int = 0):
        self.target = target
        self.wait_for = list(wait_for or [])
        self.wait_exit = list(wait_exit or [])
        self.max_requeues = max_requeues
        """Slurm only: requeue the job this many times at most when a rank fails because another rank was lost."""

    def __call__(self, stage: str, cfg_dict: dict) -> dict:
        from simclr_hpc.config import Config
        from simclr_hpc.launch.environment import export_torch_env

        self._wait_for_dependencies()
        export_torch_env()
        cfg = Config.model_validate(cfg_dict)
        try:
            return resolve_target(self.target)(stage, cfg)
        except Exception as exc:
            # Not inside a signal handler: this rank's own training has already stopped, so nothing is torn.
            if getattr(self, "max_requeues", 0) and lost_peer(exc):
                requeue_after_lost_peer(self.max_requeues)
            raise

    def checkpoint(self, stage: str, cfg_dict: dict) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same call, and nothing else.

        submitit calls this on rank 0 inside the USR2 signal handler, while the training loop is stopped at an arbitrary
        instruction and the other ranks keep running: saving here could write a torn checkpoint and a collective would
        deadlock. The loop's own periodic checkpoints are what the requeued job resumes from.
        """
        return submitit.helpers.DelayedSubmission(self, stage, cfg_dict)

    def _wait_for_dependencies(self) -> None:
        for pid in self.wait_exit:
            while pid_alive(pid):
                time.sleep(1.0)
        for pid, result_path in self.wait_for:
            while not os.path.exists(result_path):
                if not pid_alive(pid):
                    if os.path.exists(result_path):
                        break
                    raise RuntimeError(f"dependency job {pid} ended without writing {result_path}")
                time.sleep(1.0)
