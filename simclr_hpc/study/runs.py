"""The expanded study as data: a :class:`Plan` of :class:`RunSpec` runs in waves, plus the datasets to build first.

``plan.py`` makes one from a study file; ``engine.py`` walks its waves, ``aggregate.py`` reads its runs' results.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from simclr_hpc import rundir
from simclr_hpc.config import Config, check_safe_name
from simclr_hpc.study.schema import Study

# Submission order: an array of a later wave only depends on runs of earlier waves.
WAVES = (("pretrain",), ("finetune", "transfer"), ("distill",))


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: what to run, with which config, after which runs, and what it means in the study."""

    stage: str
    name: str
    cfg: Config
    depends_on: tuple[str, ...] = ()
    """Keys (``stage/name``) of the runs that must finish first."""
    labels: dict = field(default_factory=dict, hash=False, compare=False)
    """Study coordinates of the run (section, encoder, seed, label_fraction, teacher, student, k, ...), for the report."""

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.name}"

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir(self.stage)

    @property
    def result_path(self) -> Path:
        return rundir.result_path(self.run_dir)


@dataclass
class DatasetJob:
    """A dataset the study needs: its source spec and the shard directory to build if it has no index.json."""

    name: str
    source: str
    shards: Path
    val_fraction: float


@dataclass
class Plan:
    """Every run of a study in dependency order, plus the datasets to build first."""

    study: Study
    runs: list[RunSpec]
    datasets: list[DatasetJob]

    def __post_init__(self) -> None:
        self._by_key = {run.key: run for run in self.runs}

    def get(self, key: str) -> RunSpec:
        return self._by_key[key]

    def stage(self, stage: str) -> list[RunSpec]:
        return [run for run in self.runs if run.stage == stage]

    def waves(self) -> list[list[RunSpec]]:
        """Runs grouped so that each group only depends on earlier groups (one array per stage within a group)."""
        out = []
        for stages in WAVES:
            wave = [run for run in self.runs if run.stage in stages]
            if wave:
                out.append(wave)
        return out

    @property
    def study_dir(self) -> Path:
        return rundir.study_dir(self.study.root, self.study.name)


def fmt_number(value: float) -> str:
    """0.01 -> "0.01", 1.0 -> "1", 0.5 -> "0.5": short, exact and safe in a path."""
    return f"{value:g}".replace("+", "")


def safe_run_name(*parts: object) -> str:
    """Join parts with '-' into a safe name; a name over 100 characters keeps a readable prefix and a content hash."""
    name = "-".join(str(p) for p in parts)
    if len(name) > 100:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:89]}-{digest}"
    return check_safe_name(name, "run name")
