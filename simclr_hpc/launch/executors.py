"""The executors a user can name (``--executor NAME``), each the :class:`~simclr_hpc.launch.launcher.Launcher` that
runs its jobs. The one place that maps names to launchers; a new executor is one class and one line here."""

from __future__ import annotations

from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.launcher import Launcher
from simclr_hpc.launch.local_launcher import InProcessLauncher, LocalLauncher
from simclr_hpc.launch.slurm_launcher import SlurmLauncher
from simclr_hpc.readers import quote

EXECUTORS: dict[str, type[Launcher]] = {cls.name: cls for cls in (SlurmLauncher, LocalLauncher, InProcessLauncher)}
CLUSTER = SlurmLauncher.name
"""The default of ``submit`` and ``sweep``."""
THIS_MACHINE = LocalLauncher.name
"""The default of ``study run`` and ``demo``."""


def launcher(name: str, *, blocking: bool | None = None, what: str = "--executor") -> Launcher:
    """A fresh launcher for executor ``name`` (one per command: it caches what it asked the scheduler).
    ``blocking``: only launchers that are (True) or are not (False) blocking are accepted."""
    allowed = [n for n, cls in EXECUTORS.items() if blocking is None or cls.blocking == blocking]
    if name not in allowed:
        here = "; this command runs on this machine: for a cluster, `simclr-hpc study submit STUDY`" if blocking else ""
        raise LaunchError(f"{what} {quote(name)}: use {' or '.join(allowed)}{here}")
    return EXECUTORS[name]()


def executor_help(blocking: bool | None = None) -> str:
    """``--executor``'s help: each accepted name with its one line."""
    return "; ".join(f"{n}: {cls.help}" for n, cls in EXECUTORS.items() if blocking is None or cls.blocking == blocking)
