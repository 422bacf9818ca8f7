"""Checks of a submission that every launcher shares, run before anything is written or submitted.

``submit.prepare`` calls these first (then the launcher's own ``check``: partition, nodes, GPUs, dependencies), so a
bad request (a malformed dependency, two runs writing one directory, an unsafe path) leaves no trace.
"""

from __future__ import annotations

from pathlib import Path

from simclr_hpc.config import Config
from simclr_hpc.launch import slurm
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.profile import check_plain_text


def parse_dependency(items: list[str] | str | None) -> list[str]:
    """``["afterok:12:13", "14"]`` or ``"afterok:12"`` -> ``["12", "13", "14"]``. Only ``afterok`` is accepted."""
    if not items:
        return []
    if isinstance(items, str):
        items = [items]
    ids: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            kind, sep, rest = part.partition(":")
            if sep and kind != "afterok":
                raise LaunchError(f"--dependency {part!r}: only afterok:JOBID[:JOBID...] is supported")
            for jid in (rest if sep else part).split(":"):
                if not slurm.JOB_ID.match(jid):
                    raise LaunchError(f"--dependency {part!r}: {jid!r} is not a Slurm job id (digits, or ID_INDEX)")
                ids.append(jid)
    return list(dict.fromkeys(ids))


def resolved(cfg: Config) -> Config:
    """The config with ``run.root`` absolute: jobs start in other directories and inside containers."""
    root = Path(cfg.run.root).expanduser().absolute()
    try:
        check_plain_text(str(root), "run.root")
    except ValueError as err:
        raise LaunchError(str(err)) from None
    data = cfg.model_dump(mode="json")
    data["run"]["root"] = str(root)
    return Config.model_validate(data)


def check_unique(stage: str, cfgs: list[Config]) -> None:
    """Two runs of one sweep must not write the same run directory."""
    seen: dict[Path, int] = {}
    for i, cfg in enumerate(cfgs):
        path = cfg.run_dir(stage)
        if path in seen:
            raise LaunchError(f"sweep entries {seen[path]} and {i} both write {path}: give them different run.name")
        seen[path] = i
