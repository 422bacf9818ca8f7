"""``simclr-hpc jobs`` asks Slurm once, for this user's jobs only: one ``squeue -u UID`` call however many studies and
jobs the run root holds (the whole-cluster listings of ``squeue`` and ``scontrol show job`` at every refresh are what a
large site's admins notice). Counted through wrappers on PATH that log each call and then run the real command."""

from __future__ import annotations

import os
import shutil
import stat

from simclr_hpc.launch.registry import JobRecord, Registry, registry_path
from tests.launch.helpers import cli

COMMANDS = ("squeue", "sacct", "scontrol", "sinfo")


def _wrappers(tmp_path):
    """A directory of logging wrappers, first on PATH; each runs the real command when this machine has it."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in COMMANDS:
        real = shutil.which(name)
        run = f'exec {real} "$@"' if real else "exit 1"
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{run}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


def _rows(root, study: str, ids: list[str]) -> None:
    run_dir = root / study / "pretrain"
    Registry(registry_path(root, study)).add(
        [
            JobRecord(
                study=study,
                stage="pretrain",
                run_name=f"r{jid}",
                job_id=jid,
                executor="slurm",
                state="PENDING",
                run_dir=str(run_dir / f"r{jid}"),
                log_dir="x",
                stdout="x",
                stderr="x",
                config_hash="h",
            )
            for jid in ids
        ]
    )


def test_jobs_makes_one_squeue_call_restricted_to_this_user(tmp_path):
    root = tmp_path / "runs"
    _rows(root, "a", ["990001", "990002_0", "990002_1"])
    _rows(root, "b", ["990003"])
    bin_dir, log = _wrappers(tmp_path)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = cli("jobs", "--root", str(root), env=env)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    squeue = [c for c in calls if c.startswith("squeue")]
    assert len(squeue) == 1, calls
    words = squeue[0].split()
    assert words[words.index("-u") + 1] == str(os.getuid()) and "all" in words  # this user's jobs, finished ones too
    assert not any(c.startswith("scontrol") for c in calls)
    assert len([c for c in calls if c.startswith("sacct")]) <= 1  # jobs Slurm forgot: one accounting call at most
