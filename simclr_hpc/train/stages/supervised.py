"""Fine-tuning and transfer: a classifier on an encoder's head layer, trained on a labelled subset; and the
classification step (cross-entropy in micro-batches) that distillation reuses.

``linear``: the encoder is frozen, so its features are computed once (no augmentation), and the linear probe is
solved on them in ``build()`` (``probe.py``: L-BFGS to convergence, its penalty chosen on ``data.val_split``), so the
loop runs no step; the same frozen features also give the kNN protocol (``knn.py``, k = 20 and 200, the labelled
subset as the bank). ``full``: every layer is trained on augmented images, in the loop.

``encoder=random`` is the random-init baseline of the configured architecture (with ``full``: the network trained
from scratch); ``encoder=pixels`` is the raw-pixel baseline (``models/pixels.py``; linear only).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.config import ConfigError, FinetuneSection, ModelSection, TransferSection
from simclr_hpc.data import augment, pipeline, subsets
from simclr_hpc.data.shards import DatasetIndex, read_index
from simclr_hpc.models import Arch, ProjectionHead, SimCLRModel, build_simclr, classifier_on
from simclr_hpc.models.pixels import PixelEncoder
from simclr_hpc.train.artifacts import load_simclr
from simclr_hpc.train.evaluate import EvalSet, gather_features, local_features, logits_metrics, top1_metrics
from simclr_hpc.train.knn import knn_hits, knn_metrics
from simclr_hpc.train.probe import Labelled, ProbeFit, Standardizer, fit_probe, train_loss
from simclr_hpc.train.stages.labelled import (
    HOLDOUT_FRACTION,
    LabelledSubset,
    class_subset,
    file_subset,
    fraction_subset,
    validation_set,
)
from simclr_hpc.train.stages.loaders import labelled_source, train_stream
from simclr_hpc.train.task import StageContext

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, slice], torch.Tensor]
"""``loss_fn(logits, x, y, part)`` of one micro-batch; ``part`` is its slice of the per-device batch."""


def classification_step(
    ctx: StageContext, model: nn.Module, batch: dict, loss_fn: LossFn | None = None
) -> torch.Tensor:
    """Cross-entropy (or ``loss_fn``) over the per-device batch, in micro-batches of ``ctx.micro`` if needed."""
    engine = ctx.engine
    x = batch["views"][0].to(ctx.device, non_blocking=True)
    y = batch["y"].to(ctx.device, non_blocking=True)
    n, m = len(y), ctx.micro
    total = torch.zeros((), device=ctx.device)
    starts = list(range(0, n, m))
    for i, s in enumerate(starts):
        part = slice(s, s + m)
        with engine.no_sync(model, last=i == len(starts) - 1):
            with engine.autocast():
                logits = model(x[part]).float()
            loss = loss_fn(logits, x[part], y[part], part) if loss_fn else F.cross_entropy(logits, y[part])
            # Scale each micro-batch by its share so the step's gradient is that of the mean over the whole batch.
            loss = loss * (len(y[part]) / n)
            engine.backward(loss)
        total += loss.detach()
    return total


class SupervisedTask:
    """A classifier on head layer ``head_layers`` of ``section.encoder``, trained on ``subset`` (see the module doc)."""

    stage: str

    def __init__(
        self,
        ctx: StageContext,
        section: FinetuneSection | TransferSection,
        head_layers: int,
        subset: LabelledSubset,
        index: DatasetIndex,
    ):
        self.ctx, self.cfg = ctx, ctx.cfg
        self.section, self.head_layers, self.labelled = section, head_layers, subset
        self.channels = index.channels
        self.valset = validation_set(index, self.cfg.data.val_split, subset.evalset)
        self.classifier = None  # built by build(); under ``linear`` its linear layer is the solved probe
        self.raw: Labelled | None = None
        """Linear: the frozen encoder's features of the labelled subset, in key order, identical on every rank (the
        probe's training set and the kNN bank)."""
        self.standardizer: Standardizer | None = None
        self.probe: ProbeFit | None = None
        self.model_cfg: ModelSection | None = None

    @property
    def fitted_by_build(self) -> bool:
        """The linear probe is solved in ``build()``; full fine-tuning trains in the loop."""
        return self.section.protocol == "linear"

    def _encoder(self) -> tuple[SimCLRModel, ModelSection]:
        ref, field_name = self.section.encoder, f"{self.stage}.encoder"
        if ref == "random":
            return build_simclr(self.cfg.model), self.cfg.model
        if ref == "pixels":  # linear only (config.py refuses it with full)
            pixels = PixelEncoder(self.cfg.data.image_size, self.channels)
            return SimCLRModel(pixels, ProjectionHead(pixels.feat_dim, 0, 0, 0)), self.cfg.model
        if not ref:
            raise ConfigError(
                f"{field_name}: empty; set it to a pretrain run directory (or 'random' or 'pixels' for a baseline)"
            )
        return load_simclr(ref, field_name)

    def build(self) -> nn.Module:
        simclr, self.model_cfg = self._encoder()
        # A label fraction or class subset reads only its own samples: from its own small shard set.
        self.train_source = labelled_source(self.ctx, self.labelled.train_keys)
        if self.head_layers > len(simclr.head.blocks):
            raise ConfigError(
                f"finetune.from_head_layer: {self.head_layers} but the encoder's projection head has "
                f"{len(simclr.head.blocks)} layers; use 0..{len(simclr.head.blocks)}"
            )
        self.classifier = classifier_on(simclr, self.head_layers, self.labelled.num_classes)
        if self.section.protocol == "full":
            return self.classifier
        self.probe = self._solve_probe()
        with torch.no_grad():
            self.classifier.linear.weight.copy_(self.probe.weight)
            self.classifier.linear.bias.copy_(self.probe.bias)
        return self.classifier.linear

    def _solve_probe(self) -> ProbeFit:
        """Embed the labelled subset (and the validation split) once and solve the probe on them (``probe.py``); every
        rank solves the same problem on the same features, so the ranks agree without a broadcast."""
        extractor = self.classifier.to(self.ctx.device).eval()
        shards, split, keys = self.train_source
        train = EvalSet(split, self.labelled.num_classes, keys, self.labelled.label_map, shards=shards)
        self.raw = Labelled(*gather_features(self.ctx, train, extractor.features))
        self.standardizer = Standardizer.fit(self.raw.x)
        if self.valset is not None:
            val = gather_features(self.ctx, self.valset, extractor.features)
            return fit_probe(self.raw, Labelled(*val), self.labelled.num_classes, self.standardizer)
        holdout = subsets.class_balanced_fraction(self.raw.y.cpu().numpy(), HOLDOUT_FRACTION, self.cfg.run.seed)
        return fit_probe(
            self.raw,
            None,
            self.labelled.num_classes,
            self.standardizer,
            holdout=torch.from_numpy(holdout).to(self.raw.y.device),
        )

    def batches(self, first_segment: int) -> Iterator[dict]:
        cfg = self.cfg
        if self.fitted_by_build:
            return iter(())  # the probe is solved in build(): the loop takes no batch
        shards, split, keys = self.train_source
        return pipeline.train_loader(
            shards,
            split,
            augment.SupervisedAugment(cfg.data.image_size, cfg.data.flip),
            keys=keys,
            label_map=self.labelled.label_map,
            **train_stream(self.ctx, first_segment),
        )

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return classification_step(self.ctx, model, batch)

    def monitor(self, model: nn.Module, step: int) -> dict:
        return {}

    def evaluate(self, model: nn.Module) -> dict:
        trained = self.ctx.engine.unwrap(model)
        if not self.fitted_by_build:
            return top1_metrics(trained.to(self.ctx.device), self.ctx, self.labelled.evalset)
        return self._probe_metrics(trained)

    def _probe_metrics(self, trained: nn.Linear) -> dict:
        """Linear probe and kNN on the frozen features of the eval set (embedded once, the extractor in eval mode),
        and how the probe was chosen: its penalty, where and on how many images, its passes over the labelled set,
        its final loss on the whole of it."""
        num_classes, fit = self.labelled.num_classes, self.probe
        # The eval features stay sharded by rank: each rank scores its share, and the counts are summed.
        x, y = local_features(self.ctx, self.labelled.evalset, self.classifier.features)
        folded = self.standardizer.fold(trained).to(x.device)
        with torch.no_grad():
            out = logits_metrics(folded(x) if len(y) else torch.zeros(0, num_classes), y, num_classes)
        hits = D.all_reduce_sum(knn_hits(x, y, self.raw.x, self.raw.y, num_classes, device=self.ctx.device))
        out.update(knn_metrics(hits, out["eval_images"], len(self.raw.y), num_classes))
        out.update(
            probe_penalty=fit.penalty,
            probe_select_split=self.valset.split if self.valset else "train-holdout",
            probe_select_top1=fit.select_top1,
            probe_select_images=fit.select_images,
            probe_penalties_tried=len(fit.path),
            probe_converged=fit.converged,
            probe_epochs=float(fit.passes),
            probe_train_loss=train_loss(self.raw, fit, self.standardizer),
        )
        return out

    def arch(self) -> Arch:
        return Arch("classifier", self.model_cfg, self.head_layers, self.labelled.num_classes)

    def export(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = self.classifier.state_dict()
        if self.fitted_by_build:  # the frozen parts, and the solved probe folded onto the raw features
            folded = self.standardizer.fold(self.ctx.engine.unwrap(model))
            state.update({f"linear.{k}": v for k, v in folded.state_dict().items()})
        return {k: v.cpu() for k, v in state.items()}

    def facts(self) -> dict[str, int | str]:
        facts: dict[str, int | str] = {
            "train_images": len(self.labelled.train_keys),
            "num_classes": self.labelled.num_classes,
        }
        if self.labelled.subset_sha256:
            facts["label_subset_sha256"] = self.labelled.subset_sha256
        return facts

    def subset(self) -> dict | None:
        return self.labelled.record()


class FinetuneTask(SupervisedTask):
    """Fine-tuning: a class-balanced ``finetune.label_fraction`` of the labels, every class, or exactly the images of
    ``finetune.label_subset_file``."""

    stage = "finetune"

    def __init__(self, ctx: StageContext):
        cfg = ctx.cfg
        index = read_index(cfg.data.shards)
        if cfg.finetune.label_subset_file:
            subset = file_subset(index, cfg.data.train_split, cfg.data.eval_split, cfg.finetune.label_subset_file)
        else:
            subset = fraction_subset(
                index, cfg.data.train_split, cfg.data.eval_split, cfg.finetune.label_fraction, cfg.run.seed
            )
        super().__init__(ctx, cfg.finetune, cfg.finetune.from_head_layer, subset, index)


class TransferTask(SupervisedTask):
    """Transfer: ``transfer.num_classes`` classes of the target dataset, on the encoder's output (head layer 0)."""

    stage = "transfer"

    def __init__(self, ctx: StageContext):
        cfg = ctx.cfg
        index = read_index(cfg.data.shards)
        subset = class_subset(index, cfg.data.train_split, cfg.data.eval_split, cfg.transfer, cfg.run.seed)
        super().__init__(ctx, cfg.transfer, 0, subset, index)
