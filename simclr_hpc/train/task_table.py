"""The task table: one row per stage saying what the stage needs and how its inputs are checked, and which
:class:`~simclr_hpc.train.task.Task` class trains it (imported only when a run trains).

Torch-free, so that everything that asks about stages reads it on a login node: the runner (``TASKS[stage].task()``),
the input checks before a submission (``references.check_inputs``) and the CLI's help (``summary``). A new stage is
one row here, one Task class under ``train/stages/``, and its config section.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simclr_hpc.config import STAGES, Config, ConfigError
from simclr_hpc.data.index import DatasetIndex


@dataclass(frozen=True)
class RunInput:
    """A finished run a stage loads, named by a config field."""

    field: str
    """Dotted config field holding the run directory (``finetune.encoder``)."""
    kind: str | None = None
    """What that run must have trained: ``classifier`` (a fine-tune), or None for any encoder."""
    baselines: bool = False
    """Whether a baseline name (``random``, ``pixels``) stands for a run here."""
    optional: bool = False
    """Whether it may be left empty (a distillation from labels only; a student trained from scratch)."""

    def value(self, cfg: Config) -> str:
        section, name = self.field.split(".")
        return getattr(getattr(cfg, section), name)


Check = Callable[[Config, "DatasetIndex | None", "dict[str, dict]"], None]
"""A stage's own input check: ``(cfg, index or None while the shards are to be built, {input field: arch})``."""


@dataclass(frozen=True)
class TaskEntry:
    """One stage: its help line, what it needs, its own input check, and the Task class that trains it."""

    name: str
    summary: str
    """One line for the CLI's help."""
    task_path: str
    """``module:Class`` of its :class:`~simclr_hpc.train.task.Task`."""
    needs_labels: bool = True
    evaluates: bool = True
    """Whether it reads ``data.eval_split`` (every stage but pretraining measures accuracy)."""
    sweeps: bool = True
    """Whether ``simclr-hpc sweep`` hands its runs out as one array (pretraining is a multi-node job per run:
    ``simclr-hpc submit pretrain``)."""
    inputs: tuple[RunInput, ...] = ()
    check: Check | None = field(default=None, compare=False)

    def task(self) -> Any:
        """The Task class (imports torch)."""
        module, _, name = self.task_path.partition(":")
        return getattr(importlib.import_module(module), name)


def _head_layer_within_the_head(cfg: Config, index: DatasetIndex | None, archs: dict[str, dict]) -> None:
    arch = archs.get("finetune.encoder")
    if arch is not None:
        layers = int(arch.get("model", {}).get("proj_layers", 0)) if arch.get("kind") == "simclr" else 0
        if cfg.finetune.from_head_layer > layers:
            raise ConfigError(
                f"finetune.from_head_layer: {cfg.finetune.from_head_layer} but the encoder's "
                f"projection head has {layers} layer(s); use 0..{layers}"
            )
    if index is not None and cfg.finetune.label_subset_file:
        from simclr_hpc.data.subsets import positions_from_file

        train = index.split(cfg.data.train_split)
        positions_from_file(cfg.finetune.label_subset_file, train.keys, train.names)


def _classes_within_the_dataset(cfg: Config, index: DatasetIndex | None, archs: dict[str, dict]) -> None:
    if index is not None and cfg.transfer.num_classes > index.num_classes:
        raise ConfigError(
            f"transfer.num_classes: {cfg.transfer.num_classes} but {cfg.data.shards} has "
            f"{index.num_classes} classes; use 0 (all) or 1..{index.num_classes}"
        )


def _teacher_and_student_fit(cfg: Config, index: DatasetIndex | None, archs: dict[str, dict]) -> None:
    d = cfg.distill
    teacher = archs.get("distill.teacher")
    if teacher is not None and index is not None and teacher.get("num_classes") != index.num_classes:
        raise ConfigError(
            f"distill.teacher: {d.teacher} predicts {teacher.get('num_classes')} classes but "
            f"{cfg.data.shards} has {index.num_classes}"
        )
    student = archs.get("distill.student_init")
    if student is not None:
        model = student.get("model", {})
        if model.get("backbone") != cfg.model.backbone or model.get("width") != cfg.model.width:
            raise ConfigError(
                f"distill.student_init: {d.student_init} is a {model.get('backbone')} (width "
                f"{model.get('width')}) but model.backbone is {cfg.model.backbone} "
                f"(width {cfg.model.width})"
            )


TASKS: dict[str, TaskEntry] = {
    entry.name: entry
    for entry in (
        TaskEntry(
            "pretrain",
            "SimCLR on unlabelled images (NT-Xent over two views)",
            "simclr_hpc.train.stages.pretrain:PretrainTask",
            needs_labels=False,
            evaluates=False,
            sweeps=False,
        ),
        TaskEntry(
            "finetune",
            "a classifier on a pretrained encoder, from a projection-head layer, on a label fraction",
            "simclr_hpc.train.stages.supervised:FinetuneTask",
            inputs=(RunInput("finetune.encoder", baselines=True),),
            check=_head_layer_within_the_head,
        ),
        TaskEntry(
            "distill",
            "a student trained on a fine-tuned teacher's soft labels",
            "simclr_hpc.train.stages.distill:DistillTask",
            inputs=(
                RunInput("distill.teacher", kind="classifier", optional=True),
                RunInput("distill.student_init", optional=True),
            ),
            check=_teacher_and_student_fit,
        ),
        TaskEntry(
            "transfer",
            "a pretrained encoder on another dataset (or a k-class subset of one)",
            "simclr_hpc.train.stages.supervised:TransferTask",
            inputs=(RunInput("transfer.encoder", baselines=True),),
            check=_classes_within_the_dataset,
        ),
    )
}
"""Stage name -> its entry, in ``config.STAGES`` order (a test holds the two together)."""
SWEEP_STAGES = tuple(name for name, entry in TASKS.items() if entry.sweeps)
"""The stages ``simclr-hpc sweep`` takes."""


def stage_help(names: tuple[str, ...] = STAGES) -> str:
    """``pretrain | finetune | ...``: the stages ``names``, for an argument's help."""
    return " | ".join(name for name in names if name in TASKS)
