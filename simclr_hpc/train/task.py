"""What the loop relies on: the :class:`Task` protocol one class per stage implements, the :class:`StageContext` it is
given, and the :class:`TrainOutcome` the loop returns.

The loop calls, in this order: ``build()`` once; then ``batches(first_segment)`` once and (unless ``fitted_by_build``)
per optimizer step, ``step(model, batch)`` and then ``monitor(model, step)``; at every checkpoint ``arch()``; at the end ``evaluate(model)`` and ``export(model)``.
``facts()`` and ``subset()`` may be called any time after construction; the runner records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

import torch
from torch import nn

from simclr_hpc.config import Config
from simclr_hpc.models import Arch
from simclr_hpc.train.engine import Engine


@dataclass(frozen=True)
class StageContext:
    """Runtime facts derived at start (never configured): logged once and recorded in result.json."""

    cfg: Config
    engine: Engine
    run_dir: Path
    per_device: int
    """Images per rank per optimizer step (``train.global_batch / world_size``)."""
    micro: int
    """Images per forward pass (at most ``train.max_batch_per_device``)."""
    accumulation: int
    """Forward passes per optimizer step: ``per_device / micro``."""

    @property
    def device(self) -> torch.device:
        return self.engine.device


@runtime_checkable
class Task(Protocol):
    """One stage's part of training; the loop (``loop.train``) is the same for every stage."""

    stage: str
    """The stage name, as in ``config.STAGES`` (recorded in checkpoint meta)."""
    fitted_by_build: bool
    """True when ``build()`` returns the model already fitted (the linear probe, solved by L-BFGS on frozen
    features): the loop then runs no optimizer step, and only evaluates and exports it."""

    def build(self) -> nn.Module:
        """The module the optimizer trains, with its initial weights (the loop has seeded torch identically on every
        rank). Loads what the stage needs from finished runs (an encoder, a teacher) and, for a frozen encoder, embeds
        the training subset once (a collective: every rank calls ``build``)."""
        ...

    def batches(self, first_segment: int) -> Iterable[dict]:
        """This rank's training batches from the start of data segment ``first_segment`` (``train.ckpt_every_steps``
        steps each) to the end of the run: one iterator (one loader) for the whole run. Segment s's batches are
        seeded by (seed, rank, s), so a run resumed at a checkpoint's segment sees the batches an uninterrupted one
        would. Each batch is a dict with ``views`` (a tuple of tensors), ``y``, optionally ``keys``, and ``skipped``
        (corrupt samples dropped)."""
        ...

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """Forward and backward of one optimizer step's batch through ``engine.backward`` (the loop then calls
        ``engine.step``). Returns the detached loss of the step."""
        ...

    def monitor(self, model: nn.Module, step: int) -> dict[str, Any]:
        """Metrics to log after optimizer step ``step`` (1-based), merged into that step's ``metrics.jsonl`` line and
        progress line; empty on most steps. Every rank calls it; it must not touch global random state."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Metrics of the trained model on the eval split (every rank calls it: counts are summed over ranks)."""
        ...

    def arch(self) -> Arch:
        """What :meth:`export` returns, cheap (no copy of the weights); valid after :meth:`build`."""
        ...

    def export(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The deployable model's state_dict on the CPU (what later stages load), for the final checkpoint."""
        ...

    def facts(self) -> dict[str, int | str]:
        """Stage facts for the top level of result.json (``num_classes``, ``train_images``, ``labelled_images``,
        ``label_subset_sha256``)."""
        ...

    def subset(self) -> dict | None:
        """The labelled subset the run trains on, recorded as subset.json (None: the stage reads the whole split)."""
        ...


@dataclass(frozen=True)
class TrainOutcome:
    """What a finished ``loop.train`` hands to the runner."""

    metrics: dict[str, Any]
    """``task.evaluate`` of the final model."""
    loss: float
    """Loss of the last training step."""
    steps: int
    """Optimizer steps done (``train.steps``; 0 for a task fitted by its ``build()``)."""
    skipped_samples: int
    """Corrupt samples skipped over the whole run and all ranks (``data.on_error=skip``)."""
    images_per_s: float
    """Training throughput of this process's session (images of the global batch per second; 0 if none trained)."""
