"""What runs inside every job: a ``submitit.helpers.Checkpointable`` that sets up the environment and runs one stage."""

from __future__ import annotations

import importlib
import os
import time

import submitit

RUN_TARGET = "simclr_hpc.train.runner:run_stage"
"""The function a job calls: ``run_stage(stage: str, cfg: Config) -> dict`` (resumes from its latest checkpoint)."""


def resolve_target(target: str):
    """``"package.module:function"`` -> the function."""
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
                 wait_exit: list[int] | None = None):
        self.target = target
        self.wait_for = list(wait_for or [])
        self.wait_exit = list(wait_exit or [])

    def __call__(self, stage: str, cfg_dict: dict) -> dict:
        from simclr_hpc.config import Config
        from simclr_hpc.launch.environment import export_torch_env

        self._wait_for_dependencies()
        export_torch_env()
        cfg = Config.model_validate(cfg_dict)
        return resolve_target(self.target)(stage, cfg)

    def checkpoint(self, stage: str, cfg_dict: dict) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same call, and nothing else.

        submitit calls this on rank 0 inside the USR2 signal handler, while the training loop is stopped at an arbitrary
        instruction and the other ranks keep running: saving here could write a torn checkpoint and a collective would
        deadlock. The loop's own periodic checkpoints are what the requeued job resumes from.
        """
        return submitit.helpers.DelayedSubmission(self, stage, cfg_dict)

    def _wait_for_dependencies(self) -> None:
        for pid in self.wait_exit:
            while _alive(pid):
                time.sleep(1.0)
        for pid, result_path in self.wait_for:
            while not os.path.exists(result_path):
                if not _alive(pid):
                    if os.path.exists(result_path):
                        break
                    raise RuntimeError(f"dependency job {pid} ended without writing {result_path}")
                time.sleep(1.0)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a finished child its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
    except OSError:
        return True
