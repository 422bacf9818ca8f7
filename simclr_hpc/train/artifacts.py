"""Loading what a finished run exported: its model (an encoder for fine-tuning and transfer, a classifier as a
distillation teacher) from its last whole checkpoint, and its result. ``field_name`` names the config field that
pointed here, so every error tells the user which setting to fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from simclr_hpc import rundir
from simclr_hpc.config import ConfigError, ModelSection
from simclr_hpc.models import Arch, Classifier, SimCLRModel, build_simclr
from simclr_hpc.rundir import Result
from simclr_hpc.train import checkpoint as ckpt


@dataclass(frozen=True)
class Export:
    """A finished run's exported model: its weights and what they belong to."""

    state: dict[str, torch.Tensor]
    arch: Arch


def finished_result(run_dir: str | Path, field_name: str) -> Result:
    """The result of the finished run at ``run_dir``; a ConfigError naming ``field_name`` if it has none."""
    result = Result.read(run_dir)
    if result is None:
        raise ConfigError(f"{field_name}: {run_dir} has no {rundir.RESULT}: that run has not finished; run it first")
    return result


def load_export(run_dir: str | Path, field_name: str) -> Export:
    """The exported model in the last whole checkpoint of the finished run at ``run_dir``."""
    if not rundir.is_finished(run_dir):
        raise ConfigError(f"{field_name}: {run_dir} has no {rundir.RESULT}: that run has not finished; run it first")
    latest = ckpt.latest_whole(rundir.checkpoints_dir(run_dir))
    if latest is None:
        raise ConfigError(f"{field_name}: {run_dir} has no whole checkpoint to load")
    state = ckpt.load_state(latest)
    if "export" not in state:
        raise ConfigError(f"{field_name}: the last checkpoint of {run_dir} holds no exported model")
    return Export(state["export"], Arch.from_meta(ckpt.read_meta(latest)["arch"]))


def load_simclr(run_dir: str | Path, field_name: str) -> tuple[SimCLRModel, ModelSection]:
    """Encoder and projection head of a finished pretrain run, and its model section. From a classifier run only the
    encoder is loaded (its head keeps random weights)."""
    export = load_export(run_dir, field_name)
    simclr = build_simclr(export.arch.model)
    if export.arch.kind == "simclr":
        simclr.load_state_dict(export.state)
    else:
        encoder_state = {k.removeprefix("encoder."): v for k, v in export.state.items() if k.startswith("encoder.")}
        if not encoder_state:
            raise ConfigError(
                f"{field_name}: {run_dir} has no encoder weights (a raw-pixel baseline run?); "
                "point it at a pretrain or fine-tune run"
            )
        simclr.encoder.load_state_dict(encoder_state)
    return simclr, export.arch.model


def load_classifier(run_dir: str | Path, field_name: str, num_classes: int, dataset: str) -> tuple[Classifier, Arch]:
    """The classifier a finished fine-tune run exported, checked to predict the ``num_classes`` of ``dataset``."""
    export = load_export(run_dir, field_name)
    arch = export.arch
    if arch.kind != "classifier":
        raise ConfigError(f"{field_name}: {run_dir} is a {arch.kind} run; a teacher must be a fine-tune run")
    if arch.num_classes != num_classes:
        raise ConfigError(
            f"{field_name}: {run_dir} predicts {arch.num_classes} classes but {dataset} has {num_classes}"
        )
    model = arch.build()
    model.load_state_dict(export.state)
    return model, arch
