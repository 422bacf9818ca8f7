"""Model builders from the config's ``model`` section, and :class:`Arch`: what a checkpoint records to rebuild its
exported model (a SimCLR model, or a classifier on head layer k of one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simclr_hpc.config import ModelSection
from simclr_hpc.models.backbones import build_backbone
from simclr_hpc.models.heads import Classifier, ProjectionHead, SimCLRModel, head_hidden_dim


def build_simclr(model_cfg: ModelSection) -> SimCLRModel:
    """Encoder and projection head of this architecture, with fresh (seeded by the caller) random weights."""
    encoder = build_backbone(model_cfg.backbone, model_cfg.cifar_stem, model_cfg.width)
    hidden = head_hidden_dim(model_cfg.proj_hidden_dim, encoder.feat_dim)
    head = ProjectionHead(encoder.feat_dim, hidden, model_cfg.proj_dim, model_cfg.proj_layers)
    return SimCLRModel(encoder, head)


def classifier_on(simclr: SimCLRModel, head_layers: int, num_classes: int) -> Classifier:
    """A classifier on head layer ``head_layers`` of ``simclr`` (shares its encoder and first head blocks; the linear
    layer is new). ``head_layers`` must be in 0..len(simclr.head.blocks)."""
    blocks = list(simclr.head.blocks[:head_layers])
    dim = simclr.head.out_dim_at(head_layers) if head_layers else simclr.encoder.feat_dim
    return Classifier(simclr.encoder, blocks, dim, num_classes)


def build_classifier(model_cfg: ModelSection, head_layers: int, num_classes: int) -> Classifier:
    """A classifier on head layer ``head_layers`` of a SimCLR model of this architecture (random weights)."""
    return classifier_on(build_simclr(model_cfg), head_layers, num_classes)


@dataclass(frozen=True)
class Arch:
    """What an exported model is, recorded in every checkpoint's ``meta.json`` as ``arch``: enough to rebuild it."""

    kind: Literal["simclr", "classifier"]
    model: ModelSection
    head_layers: int = 0
    """Classifier only: projection-head blocks under the linear layer."""
    num_classes: int = 0
    """Classifier only: logits."""

    def to_meta(self) -> dict:
        """The JSON form (a SimCLR model records only its kind and model section)."""
        out = {"kind": self.kind, "model": self.model.model_dump()}
        if self.kind == "classifier":
            out.update(head_layers=self.head_layers, num_classes=self.num_classes)
        return out

    @classmethod
    def from_meta(cls, meta: dict) -> "Arch":
        return cls(
            meta["kind"],
            ModelSection.model_validate(meta["model"]),
            int(meta.get("head_layers", 0)),
            int(meta.get("num_classes", 0)),
        )

    def build(self) -> SimCLRModel | Classifier:
        """The model this describes, with random weights (load the exported state into it)."""
        if self.kind == "simclr":
            return build_simclr(self.model)
        return build_classifier(self.model, self.head_layers, self.num_classes)
