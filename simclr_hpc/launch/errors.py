"""The error types of ``launch/``: a cluster request a user can fix, and a job registry that cannot be used."""

from __future__ import annotations

import os
from pathlib import Path

from simclr_hpc.config import UserError


class LaunchError(UserError):
    """A submission request is wrong (partition, node count, container image, dependency, site profile, ...).

    Raised before anything is written or submitted; the CLI prints each line and exits with code 2.
    """


class RegistryError(LaunchError):
    """The study's registry.sqlite cannot be read or written; the line names the file and the fix."""


def sqlite_problem(path: Path, err: Exception, lock_wait_s: float) -> str:
    """One line for what SQLite said about the registry at ``path``."""
    text = str(err).lower()
    if path.is_dir():
        return f"{path}: is a directory, not a job registry; move it away (the registry is a file SQLite writes)"
    if "locked" in text or "busy" in text:
        return (
            f"{path}: job registry is locked by another process for more than {lock_wait_s:g} s; try again when it "
            f"is done (`fuser {path}` names it)"
        )
    # The dotfile lock (a directory beside the file) cannot be made in a read-only directory: SQLite says "disk I/O".
    unwritable = "disk i/o" in text and not os.access(path.parent, os.W_OK)
    if "readonly" in text or "read-only" in text or "permission" in text or unwritable:
        return f"{path}: job registry is read-only here ({err}); run where run.root is writable, or fix its permissions"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"{path}: job registry is corrupt or truncated ({err}); move it aside (mv {path} {path}.bad): a new "
            "one is started, and finished runs still count by their result.json"
        )
    if "unable to open" in text:
        return f"{path}: cannot open the job registry ({err}); check that {path.parent} is a writable directory"
    return f"{path}: job registry error ({err}); move it aside (mv {path} {path}.bad) if it persists"
