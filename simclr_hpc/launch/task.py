"""What runs inside every job (a ``submitit.helpers.Checkpointable`` that sets up the environment and runs one
stage), and how a job is requeued from wherever its tasks run, a container included: the job asks, the batch script
acts.

A job that fails writes its one-line reason into its row of the study's registry before it raises (``jobs`` and
``study status`` show it): a run whose input run did not finish fails in seconds, naming that run, instead of the
reason being only in a log nobody opens.

Requeue: a task inside an image has no ``scontrol``, no ``slurm.conf`` and no munge socket, so it cannot requeue its
own job. The batch script runs on the host, where Slurm's client works, and it outlives the tasks. So:

* the batch script exports ``SIMCLR_HPC_REQUEUE_FILE`` (a path on the run root, which every task sees: it is bound
  into the container), then runs the tasks;
* a task that wants its job requeued (it saved a checkpoint at the time-limit signal, or lost a peer rank) writes its
  reason to that file and exits;
* after ``srun`` returns, the batch script finds the file, removes it and runs ``scontrol requeue`` for its own job;
* a task that died from a signal asked nothing: NCCL's watchdog aborts a rank whose collective timed out (SIGABRT,
  ``TORCH_NCCL_ASYNC_ERROR_HANDLING`` 1 or 3, the default), the OOM killer sends SIGKILL, a crash SIGSEGV. srun then
  ends with 128 + the signal, and the batch script requeues the job for that too, while restarts are left
  (``srun --kill-on-bad-exit=1`` ends the other tasks at once, instead of leaving them to their watchdog).

``slurm/pretrain.sbatch`` and ``slurm/array.sbatch`` carry the same few lines as ``host_setup``/``host_teardown``.
Without the variable (``simclr-hpc run`` in a hand-written script) the task falls back to ``scontrol`` if it has one.
No torch import here.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import submitit

from simclr_hpc.fsutil import pid_alive
from simclr_hpc.launch import slurm
from simclr_hpc.launch.registry import Registry, registry_path

RUN_TARGET = "simclr_hpc.train.runner:run_stage"
"""The function a job calls: ``run_stage(stage: str, cfg: Config) -> dict`` (resumes from its latest checkpoint)."""

REQUEUE_FILE_ENV = "SIMCLR_HPC_REQUEUE_FILE"


def host_setup(run_root: Path) -> list[str]:
    """Batch-script lines before ``srun``: where this job's tasks leave a requeue request (one file per Slurm job id,
    so array tasks and a requeued job never see another's request)."""
    folder = shlex.quote(str(Path(run_root) / ".requeue"))
    return [
        f"mkdir -p {folder}",
        f'export {REQUEUE_FILE_ENV}={folder}/"job-$SLURM_JOB_ID"',
        f'rm -f "${REQUEUE_FILE_ENV}"',
    ]


def host_teardown(max_requeues: int = 0) -> list[str]:
    """Batch-script lines after ``srun``: requeue this job if a task asked, or if a task died from a signal and the job
    was restarted fewer than ``max_requeues`` times (the reason goes to the job's log); then exit with srun's status,
    so a failed task still makes a FAILED job (``afterok`` dependents must not start after it)."""
    return [
        "srun_status=$?",
        f'if [ -e "${REQUEUE_FILE_ENV}" ]; then',
        f'    echo "simclr-hpc: requeue requested ($(cat "${REQUEUE_FILE_ENV}")): scontrol requeue $SLURM_JOB_ID" >&2',
        f'    rm -f "${REQUEUE_FILE_ENV}"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        f'elif [ "$srun_status" -gt 128 ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {int(max_requeues)} ]; then',
        '    echo "simclr-hpc: a task died from signal $((srun_status - 128)) (SIGABRT: the NCCL watchdog; SIGKILL: the'
        ' OOM killer), restart ${SLURM_RESTART_COUNT:-0}: scontrol requeue $SLURM_JOB_ID" >&2',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "fi",
        'exit "$srun_status"',
    ]


def _tell(line: str) -> None:
    print(f"simclr-hpc: {line}", file=sys.stderr, flush=True)


def request_requeue(reason: str) -> bool:
    """Ask for this Slurm job to be requeued once its tasks have exited; True if the request was placed.

    With ``SIMCLR_HPC_REQUEUE_FILE`` (set by the batch script on the host): write ``reason`` there. Without it, and
    only then, ``scontrol requeue`` directly (a bare job whose script does not act on the file).
    """
    path = os.environ.get(REQUEUE_FILE_ENV)
    if path:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(reason.replace("\n", " ") + "\n")
        os.replace(tmp, path)
        _tell(f"{reason}; asked the batch script to requeue ({path})")
        return True
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or not shutil.which("scontrol"):
        _tell(
            f"{reason}, but this job cannot be requeued: no {REQUEUE_FILE_ENV} from the batch script, no scontrol here"
        )
        return False
    array_id, task_id = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    target = f"{array_id}_{task_id}" if array_id and task_id else job_id
    proc = subprocess.run(["scontrol", "requeue", target], capture_output=True, text=True, timeout=60)
    _tell(f"{reason}; scontrol requeue {target}: {proc.returncode == 0 and 'ok' or proc.stderr.strip()}")
    return proc.returncode == 0


def restarts_left(max_requeues: int) -> bool:
    """This job has been restarted fewer than ``max_requeues`` times (Slurm's SLURM_RESTART_COUNT)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < max_requeues


# What torch.distributed raises in the surviving ranks when a peer process or its node is gone: gloo's "Connection
# closed/reset by peer" at once, or a collective that ran past train.collective_timeout_s ("Timed out"). Matched by
# name and text because launch/ imports no torch.
_LOST_PEER_TYPES = frozenset({"DistBackendError", "DistNetworkError", "DistStoreError"})
# EX_TEMPFAIL (sysexits.h): the tasks' exit status after a save at the signal, "try again", visible in sacct.
EXIT_REQUEUE = 75
_LOST_PEER_TEXT = (
    "connection closed by peer",
    "connection reset by peer",
    "timed out",
    "broken pipe",
    "communicator was aborted",
    "socket timeout",
)


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
    """Ask for this Slurm job to be requeued if it has restarts left; True if the request was placed.

    Slurm's ``--requeue`` only covers node failure and preemption as slurmctld sees them. A task killed on a live node
    (OOM killer, a crashed process, a node that dropped off the network but not out of Slurm) makes the other ranks
    fail instead, and the job would end FAILED with its checkpoints unused. Requeueing from the surviving rank makes the
    job start again and resume from its latest whole checkpoint; ``max_requeues`` (the profile's) bounds the retries,
    so a deterministic failure that looks like a lost peer ends after that many attempts. The request goes to the
    batch script on the host (``request_requeue``), so it works from inside a container too.
    """
    if not os.environ.get("SLURM_JOB_ID") or not restarts_left(max_requeues):
        return False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    return request_requeue(f"a peer rank was lost (restart {restarts + 1} of at most {max_requeues})")


def requeue_after_preemption(stop: BaseException, max_requeues: int) -> None:
    """After the loop saved at the preemption signal (``stop`` is ``train.preempt.Preempted``): rank 0 asks for the
    requeue and every rank exits without a result, so submitit runs the same call again in the requeued job. Out of
    restarts (or outside Slurm) the run ends with ``stop`` as its error; its checkpoint is kept for a resubmission."""
    if not os.environ.get("SLURM_JOB_ID") or not restarts_left(max_requeues):
        raise stop
    if os.environ.get("RANK", "0") == "0":
        request_requeue(f"{stop}")
    raise SystemExit(EXIT_REQUEUE)


def _requeue_through_the_host() -> None:
    """Point submitit's requeue (``scontrol requeue`` from the task, impossible inside an image) at the batch script:
    when the script exported ``SIMCLR_HPC_REQUEUE_FILE``, submitit's USR2 handler leaves its request there instead."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    if os.environ.get(REQUEUE_FILE_ENV) and not getattr(SlurmJobEnvironment._requeue, "through_host", False):

        def _requeue(env, countdown: int) -> None:
            request_requeue(f"submitit checkpointed job {env.job_id} ({countdown} timeouts left)")

        _requeue.through_host = True
        SlurmJobEnvironment._requeue = _requeue


def wait_for_results(waits: list[tuple[int, str]], poll_s: float = 1.0) -> None:
    """Block until each ``(pid, result.json path)`` has its result (the local form of afterok); a process that ended
    without writing its result is an error naming it."""
    for pid, result_path in waits:
        while not os.path.exists(result_path):
            if not pid_alive(pid):
                if os.path.exists(result_path):
                    break
                raise RuntimeError(f"dependency job {pid} ended without writing {result_path}")
            time.sleep(poll_s)


def first_line(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 300 characters: what a registry row and a status line can hold."""
    return (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0][:300]


def record_failure(cfg, stage: str, exc: BaseException, attempts: int = 10) -> None:
    """Rank 0 of a submitted job writes why its run failed into the run's latest registry row. The row (even the
    registry) may not be there yet when the job fails at once (the submitter records it right after sbatch returns):
    try for a few seconds. Outside a submitted job (``simclr-hpc run``), and whatever happens, it never raises: the
    job's own error is what must reach the log."""
    if os.environ.get("RANK", "0") != "0" or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    registry = Registry(registry_path(cfg.run.root, cfg.run.study))
    for _ in range(attempts):
        try:
            if registry.path.exists() and registry.record_failure(cfg.run_dir(stage), first_line(exc)):
                return
        except Exception:  # noqa: BLE001 - a registry we cannot write must not hide the job's error
            return
        time.sleep(0.5)


def resolve_target(target: str):
    """``"package.module:function"`` -> the function (so tests can swap the run function without patching)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class StageJob(submitit.helpers.Checkpointable):
    """The callable submitit pickles into every job: ``StageJob(target)(stage, cfg_dict) -> result dict``.

    Every task (one per GPU) exports the torch distributed environment, then calls the target, which trains and resumes
    from the run's latest whole checkpoint by itself: a requeued job just calls it again.
    Local executor only (no Slurm to order jobs): ``wait_for`` emulates ``afterok`` with the ``(pid, result.json path)``
    of jobs that must succeed first.
    """

    def __init__(self, target: str = RUN_TARGET, wait_for: list[tuple[int, str]] | None = None, max_requeues: int = 0):
        self.target = target
        self.wait_for = list(wait_for or [])
        self.max_requeues = max_requeues
        """Slurm only: requeue the job this many times at most when a rank fails because another rank was lost."""

    def __call__(self, stage: str, cfg_dict: dict) -> dict:
        from simclr_hpc.config import Config
        from simclr_hpc.launch.environment import export_torch_env
        from simclr_hpc.train import preempt

        _requeue_through_the_host()
        cfg = Config.model_validate(cfg_dict)
        try:
            wait_for_results(self.wait_for)
        except RuntimeError as exc:
            record_failure(cfg, stage, exc)
            raise
        export_torch_env()
        fn = resolve_target(self.target)
        # The runner's run lock asks Slurm whether a lock's holder (another job) has ended; only launch/ knows Slurm.
        kwargs = {"job_alive": slurm.job_active} if "job_alive" in inspect.signature(fn).parameters else {}
        try:
            return fn(stage, cfg, **kwargs)
        except preempt.Preempted as stop:
            requeue_after_preemption(stop, getattr(self, "max_requeues", 0))
            raise
        except Exception as exc:
            # Not inside a signal handler: this rank's own training has already stopped, so nothing is torn.
            if not (getattr(self, "max_requeues", 0) and lost_peer(exc) and requeue_after_lost_peer(self.max_requeues)):
                record_failure(cfg, stage, exc)
            raise

    def checkpoint(self, stage: str, cfg_dict: dict) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same call, and nothing else.

        submitit's USR2 handler calls this outside the training loop (start-up, evaluation; the loop handles the
        signal itself while it trains, see ``train/preempt.py``). Saving here, inside a signal handler, could write a
        torn checkpoint and a collective would deadlock; the requeued job resumes from the latest whole checkpoint.
        """
        return submitit.helpers.DelayedSubmission(self, stage, cfg_dict)


class LaneJob:
    """One worker process of a local array (``LocalLauncher.submit_array``): ``LaneJob(target)(calls)`` runs each
    ``(stage, cfg_dict, wait_for)`` of ``calls`` in turn, as its own :class:`StageJob` would. A failed run does not stop
    the runs after it (as on Slurm, where every run is its own task); the lane raises at the end, naming them."""

    def __init__(self, target: str = RUN_TARGET):
        self.target = target

    def __call__(self, calls: list[tuple[str, dict, list[tuple[int, str]]]]) -> list[dict | None]:
        results, failed = [], []
        for stage, cfg_dict, wait_for in calls:
            try:
                results.append(StageJob(self.target, wait_for)(stage, cfg_dict))
            except Exception as exc:  # noqa: BLE001 - reported below, after the other runs had their turn
                traceback.print_exc()
                results.append(None)
                failed.append(f"{cfg_dict['run']['name']}: {first_line(exc)}")
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(calls)} runs failed: " + "; ".join(failed))
        return results
