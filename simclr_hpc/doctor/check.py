"""One line of ``simclr-hpc doctor``'s report: :class:`Check`, with its status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, its status, what was found and, unless ok, how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""
