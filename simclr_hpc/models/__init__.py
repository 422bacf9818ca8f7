"""Backbones and heads. Models compute; they never call collectives or move themselves to a device."""

from simclr_hpc.models.backbones import build_backbone
from simclr_hpc.models.build import Arch, build_classifier, build_simclr, classifier_on
from simclr_hpc.models.heads import Classifier, ProjectionHead, SimCLRModel, head_hidden_dim

__all__ = [
    "Arch",
    "build_backbone",
    "build_classifier",
    "build_simclr",
    "classifier_on",
    "Classifier",
    "ProjectionHead",
    "SimCLRModel",
    "head_hidden_dim",
]
