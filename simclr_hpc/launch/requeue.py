"""Requeue a Slurm job from wherever its tasks run, a container included: the job asks, the batch script acts.

A task inside an image has no ``scontrol``, no ``slurm.conf`` and no munge socket, so it cannot requeue its own job.
The batch script runs on the host, where Slurm's client works, and it outlives the tasks. So:

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

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REQUEUE_FILE_ENV = "SIMCLR_HPC_REQUEUE_FILE"


def host_setup(run_root: Path) -> list[str]:
    """Batch-script lines before ``srun``: where this job's tasks leave a requeue request (one file per Slurm job id,
    so array tasks and a requeued job never see another's request)."""
    folder = shlex.quote(str(Path(run_root) / ".requeue"))
    return [f"mkdir -p {folder}", f'export {REQUEUE_FILE_ENV}={folder}/"job-$SLURM_JOB_ID"',
            f'rm -f "${REQUEUE_FILE_ENV}"']


def host_teardown(max_requeues: int = 0) -> list[str]:
    """Batch-script lines after ``srun``: requeue this job if a task asked, or if a task died from a signal and the job
    was restarted fewer than ``max_requeues`` times (the reason goes to the job's log); then exit with srun's status,
    so a failed task still makes a FAILED job (``afterok`` dependents must not start after it)."""
    return ['srun_status=$?',
            f'if [ -e "${REQUEUE_FILE_ENV}" ]; then',
            f'    echo "simclr-hpc: requeue requested ($(cat "${REQUEUE_FILE_ENV}")): scontrol requeue $SLURM_JOB_ID" >&2',
            f'    rm -f "${REQUEUE_FILE_ENV}"',
            '    scontrol requeue "$SLURM_JOB_ID"',
            f'elif [ "$srun_status" -gt 128 ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {int(max_requeues)} ]; then',
            '    echo "simclr-hpc: a task died from signal $((srun_status - 128)) (SIGABRT: the NCCL watchdog; SIGKILL: the'
            ' OOM killer), restart ${SLURM_RESTART_COUNT:-0}: scontrol requeue $SLURM_JOB_ID" >&2',
            '    scontrol requeue "$SLURM_JOB_ID"',
            'fi',
            'exit "$srun_status"']


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
        print(f"simclr-hpc: {reason}; asked the batch script to requeue ({path})", file=sys.stderr, flush=True)
        return True
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or not shutil.which("scontrol"):
        print(f"simclr-hpc: {reason}, but this job cannot be requeued: no {REQUEUE_FILE_ENV} from the batch script "
              f"and no scontrol here", file=sys.stderr, flush=True)
        return False
    array_id, task_id = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    target = f"{array_id}_{task_id}" if array_id and task_id else job_id
    proc = subprocess.run(["scontrol", "requeue", target], capture_output=True, text=True, timeout=60)
    print(f"simclr-hpc: {reason}; scontrol requeue {target}: {proc.returncode == 0 and 'ok' or proc.stderr.strip()}",
          file=sys.stderr, flush=True)
    return proc.returncode == 0


def restarts_left(max_requeues: int) -> bool:
    """This job has been restarted fewer than ``max_requeues`` times (Slurm's SLURM_RESTART_COUNT)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < max_requeues
