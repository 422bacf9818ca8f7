"""Distillation: a frozen teacher classifier teaches a student on unlabeled images, or (no teacher) the student's own
supervised baseline.

SimCLRv2's regime (and a study's plan): the teacher is fine-tuned on a label fraction, the student is distilled on every
training image with ``label_weight: 0``, and its baseline is the same student trained on the same labelled subset
(``distill.label_fraction`` with the run's seed picks the images the teacher's fine-tuning saw) with the same steps. A
student never starts from the weights its teacher was fine-tuned from (:func:`check_not_teachers_weights`): that would
make "same base" mean "same weights".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from simclr_hpc import rundir
from simclr_hpc.config import ConfigError, read_yaml
from simclr_hpc.data import augment, pipeline, subsets
from simclr_hpc.data.shards import read_index
from simclr_hpc.losses import distill_kl
from simclr_hpc.models import Arch, Classifier, build_classifier
from simclr_hpc.train.artifacts import finished_result, load_classifier, load_simclr
from simclr_hpc.train.evaluate import EvalSet, top1_metrics
from simclr_hpc.train.stages.loaders import train_stream
from simclr_hpc.train.stages.supervised import classification_step
from simclr_hpc.train.task import StageContext


@dataclass(frozen=True)
class Teacher:
    """The frozen teacher on the training device, and what the result records about it."""

    model: Classifier
    top1: float
    backbone: str


def check_not_teachers_weights(teacher: str, student_init: str) -> None:
    """ConfigError when ``student_init`` is the teacher run or the encoder the teacher was fine-tuned from."""
    if not teacher or not student_init:
        return
    same = Path(student_init).resolve()
    config = rundir.config_path(teacher)
    source = read_yaml(config).get("finetune", {}).get("encoder", "") if config.is_file() else ""
    if same == Path(teacher).resolve() or (source and same == Path(source).resolve()):
        raise ConfigError(
            f"distill.student_init: {student_init} holds the weights the teacher ({teacher}) was fine-tuned from; "
            "start the student from random weights (student_init empty) or an encoder pretrained with another seed"
        )


class DistillTask:
    """(1-a) * tau^2 * KL(teacher || student) + a * CE on the labelled share, over every training image.

    With ``distill.teacher`` empty the run is the student's own baseline: cross-entropy on the labelled subset only,
    the same steps and batch, so each student's gain from distillation is measured against itself.
    """

    stage = "distill"
    fitted_by_build = False

    def __init__(self, ctx: StageContext):
        self.ctx, self.cfg = ctx, ctx.cfg
        d = self.cfg.distill
        if not d.teacher and d.label_weight != 1.0:
            raise ConfigError(
                "distill.teacher: empty means the no-distillation baseline, which needs distill.label_weight=1.0; "
                "set distill.teacher to a fine-tune run directory or label_weight to 1.0"
            )
        index = read_index(self.cfg.data.shards)
        self.num_classes = index.num_classes
        split = index.splits[self.cfg.data.train_split]
        idx = subsets.class_balanced_fraction(list(split.labels), d.label_fraction, self.cfg.run.seed)
        self.labelled = {split.keys[i] for i in idx}
        self.teacher: Teacher | None = None  # loaded by build()

    def _load_teacher(self) -> Teacher:
        ref = self.cfg.distill.teacher
        model, arch = load_classifier(ref, "distill.teacher", self.num_classes, self.cfg.data.shards)
        model = model.to(self.ctx.device).eval().requires_grad_(False)
        top1 = finished_result(ref, "distill.teacher").top1
        return Teacher(model, top1, arch.model.backbone)

    def build(self) -> nn.Module:
        d = self.cfg.distill
        if d.teacher:
            check_not_teachers_weights(d.teacher, d.student_init)
            self.teacher = self._load_teacher()
        student = build_classifier(self.cfg.model, 0, self.num_classes)
        if d.student_init:
            simclr, model_cfg = load_simclr(d.student_init, "distill.student_init")
            if model_cfg.backbone != self.cfg.model.backbone or model_cfg.width != self.cfg.model.width:
                raise ConfigError(
                    f"distill.student_init: {d.student_init} is a {model_cfg.backbone} (width {model_cfg.width}) but "
                    f"model.backbone is {self.cfg.model.backbone} (width {self.cfg.model.width})"
                )
            student.encoder.load_state_dict(simclr.encoder.state_dict())
        return student

    def batches(self, first_segment: int) -> Iterator[dict]:
        cfg = self.cfg
        keys = None if self.teacher is not None else sorted(self.labelled)
        return pipeline.train_loader(
            cfg.data.shards,
            cfg.data.train_split,
            augment.SupervisedAugment(cfg.data.image_size, cfg.data.flip),
            keys=keys,
            **train_stream(self.ctx, first_segment),
        )

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        if self.teacher is None:
            return classification_step(self.ctx, model, batch)
        d, teacher = self.cfg.distill, self.teacher.model
        labelled = torch.tensor([k in self.labelled for k in batch["keys"]], device=self.ctx.device)

        def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, part: slice) -> torch.Tensor:
            with torch.no_grad(), self.ctx.engine.autocast():
                teacher_logits = teacher(x).float()
            loss = (1.0 - d.label_weight) * distill_kl(logits, teacher_logits, d.temperature)
            mask = labelled[part]
            if d.label_weight > 0 and mask.any():
                ce = F.cross_entropy(logits[mask], y[mask], reduction="sum") / len(y)
                loss = loss + d.label_weight * ce
            return loss

        return classification_step(self.ctx, model, batch, loss_fn)

    def monitor(self, model: nn.Module, step: int) -> dict:
        return {}

    def evaluate(self, model: nn.Module) -> dict:
        metrics = top1_metrics(model, self.ctx, EvalSet(self.cfg.data.eval_split, self.num_classes))
        if self.teacher is not None:
            metrics.update(teacher_top1=self.teacher.top1, teacher_backbone=self.teacher.backbone)
        return metrics

    def arch(self) -> Arch:
        return Arch("classifier", self.cfg.model, 0, self.num_classes)

    def export(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.ctx.engine.unwrap(model).state_dict().items()}

    def facts(self) -> dict[str, int]:
        return {"num_classes": self.num_classes, "labelled_images": len(self.labelled)}

    def subset(self) -> dict | None:
        return None
