"""pytest plugin: the real local Slurm test cluster (``slurm/testing/``) as a session fixture.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.slurm_cluster"]`` (or ``pytest -p tests.slurm_cluster``).
Tests marked ``slurm`` take the ``slurm_cluster`` fixture. It starts munge, MariaDB, slurmdbd, slurmctld and two slurmd,
each in its own network namespace with hostnames ``node1`` and ``node2`` (8 CPUs and 2 fake GPUs each), about 3 s on
2 cores; it reuses a cluster that is already up and healthy, and stops the cluster at the end of the session only if it
started it. Without root or without the Slurm packages it FAILS with the reason: CI counts skipped slurm tests as failures.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "slurm" / "testing"
STATE_DIR = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/slurm-local"))
NODES = ("node1", "node2")


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to know about the running test cluster."""

    nodes: tuple[str, ...]
    partition: str
    started_here: bool
    state_dir: Path

    def squeue_empty(self, timeout_s: float = 30.0) -> bool:
        """Wait until no job is queued or running; True if the queue drained in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip()
            if not out:
                return True
            time.sleep(0.2)
        return False


def _healthy() -> bool:
    """The daemons answer and both nodes are usable (idle, mixed or allocated)."""
    if not shutil.which("scontrol") or not shutil.which("sinfo"):
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0:
        return False
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True).stdout.split("\n")
    states = dict(line.split()[:2] for line in out if line.strip())
    if set(states) != set(NODES):
        return False
    usable = {"idle", "mixed", "allocated", "completing"}
    if not all(state.rstrip("*") in usable for state in states.values()):
        return False
    acct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minute", "-o", "JobID"], capture_output=True, text=True)
    return acct.returncode == 0


def _why_not_possible() -> str | None:
    if os.geteuid() != 0:
        return (
            "the slurm tests need root to start the local test cluster (network namespaces, munge, slurmd): "
            "run `make test` as root, or start it yourself with `sudo bash slurm/testing/setup.sh`"
        )
    missing = [c for c in ("slurmctld", "slurmd", "sbatch", "munged", "slurmdbd", "mariadbd") if not shutil.which(c)]
    if missing:
        return f"Slurm test cluster packages missing ({', '.join(missing)}): run `bash slurm/testing/install_deps.sh` as root"
    return None


def try_start_cluster() -> tuple[bool, str | None]:
    """Start the test cluster unless a healthy one is up: ``(started_here, None)``, or ``(False, why)`` when it is
    down and cannot be started. Used by the fixture (which fails on a reason) and by ``bench/scaling.py``."""
    if _healthy():
        return False, None
    reason = _why_not_possible()
    if reason:
        return False, reason
    env = dict(os.environ, SLURM_LOCAL_ACCOUNTING="1", SLURM_LOCAL_NO_INSTALL="1")
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "setup.sh"), "netns", str(len(NODES))],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if proc.returncode != 0 or not _healthy():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        return False, f"slurm/testing/setup.sh could not start the test cluster (exit {proc.returncode}):\n{tail}"
    return True, None


def start_cluster() -> bool:
    """Start the test cluster unless a healthy one is up; return True if this call started it. Fails with the reason."""
    started, reason = try_start_cluster()
    if reason:
        pytest.fail(reason, pytrace=False)
    return started


def stop_cluster() -> None:
    """Stop every daemon setup.sh started, by recorded PID (cancels remaining jobs first)."""
    subprocess.run(["bash", str(SCRIPTS / "teardown.sh")], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The running local Slurm cluster (started if needed; stopped at session end if this session started it)."""
    started = start_cluster()
    cluster = SlurmCluster(nodes=NODES, partition="debug", started_here=started, state_dir=STATE_DIR)
    try:
        yield cluster
    finally:
        if started and not os.environ.get("SIMCLR_HPC_KEEP_SLURM"):
            stop_cluster()
