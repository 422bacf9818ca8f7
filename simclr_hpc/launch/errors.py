"""The one error type of ``launch/``: a cluster request a user can fix."""

from __future__ import annotations

from simclr_hpc.config import UserError


class LaunchError(UserError):
    """A submission request is wrong (partition, node count, container image, dependency, site profile, ...).

    Raised before anything is written or submitted; the CLI prints each line and exits with code 2.
    """
