"""The primary contrast of each finding, as a study file declares it (``finetune.primary``, ``distill.primary``,
``transfer.primary``): what the finding's verdict is decided on, and the margin within which an effect counts as absent.
``findings.py`` computes each one per seed; ``verdict.py`` judges them. Torch-free, like the rest of the schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from simclr_hpc.config import Float, Int, Name


class Part(BaseModel):
    """Base of every study-file section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class HeadLayerPrimary(Part):
    """SimCLRv2's claim that fine-tuning from a projection-head layer beats fine-tuning from the encoder's output:
    top-1 at ``head_layer`` minus top-1 at layer 0, per seed, averaged over the section's encoders."""

    protocol: Literal["linear", "full"] | None = None
    """Protocol of the contrast (SimCLRv2's claim is about ``full``); empty = ``full`` if the section runs it, else
    ``linear``. Other protocols are reported beside it as secondary contrasts, never averaged with it."""
    label_fraction: Float | None = Field(None, gt=0.0, le=1.0)
    """Label fraction of the contrast; empty = the smallest (where the paper sees the effect)."""
    head_layer: Int = Field(1, ge=1, le=4)
    """The head layer compared with layer 0."""
    margin_pp: Float = Field(1.0, gt=0.0, le=100.0)
    """Equivalence margin in points of top-1: an effect shown to lie within +-margin is *absent*."""


class DistillPrimary(Part):
    """The paper's claim that a student gains more from a teacher of its own base: per seed, the mean over students
    of (gain from same-base teachers - mean gain from cross-base teachers), gains over the student's labels-only
    baseline."""

    label_fraction: Float | None = Field(None, gt=0.0, le=1.0)
    """Label fraction of the contrast; empty = the smallest of ``label_fractions``."""
    margin_pp: Float = Field(1.0, gt=0.0, le=100.0)
    """Equivalence margin in points of top-1."""


class TransferPrimary(Part):
    """The paper's claim that transfer is better with fewer classes, on a quantity that does not fall with k by
    itself: per seed, the least-squares slope on log2 k of d' (``separability.py``; each k's d' averaged over the
    seed's class subsets and the encoders first)."""

    dataset: Name = ""
    """The ``within`` dataset of the contrast; empty = the first."""
    protocol: Literal["linear", "full"] | None = None
    """Empty = the section's first protocol."""
    margin: Float = Field(0.1, gt=0.0, le=10.0)
    """Equivalence margin in d' per doubling of k (0.1 over 2 -> 20 classes is a change of about 0.33 in d')."""
