"""One small task object per stage. The loop (``loop.py``) is the same for all of them.

A task builds the module that is trained (``build``), yields training batches for a data segment (``batches``), does
one optimizer step's forward and backward (``step``), evaluates (``evaluate``) and exports the deployable model
(``export``) that later stages load (an encoder for fine-tuning and transfer, a classifier as a distillation teacher).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.config import Config, ConfigError, ModelSection
from simclr_hpc.data import augment, pipeline, subsets
from simclr_hpc.data.shards import read_index
from simclr_hpc.losses import distill_kl, nt_xent
from simclr_hpc.models import Classifier, ProjectionHead, SimCLRModel, build_backbone, head_hidden_dim
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train.engine import Engine

RESULT_FILE = "result.json"


@dataclass
class StageContext:
    """Runtime facts derived at start (never configured): logged once and recorded in result.json."""

    cfg: Config
    engine: Engine
    run_dir: Path
    per_device: int
    micro: int
    accumulation: int
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.engine.device


def build_simclr(model_cfg: ModelSection) -> SimCLRModel:
    encoder = build_backbone(model_cfg.backbone, model_cfg.cifar_stem, model_cfg.width)
    hidden = head_hidden_dim(model_cfg.proj_hidden_dim, encoder.feat_dim)
    head = ProjectionHead(encoder.feat_dim, hidden, model_cfg.proj_dim, model_cfg.proj_layers)
    return SimCLRModel(encoder, head)


def build_classifier(model_cfg: ModelSection, head_layers: int, num_classes: int) -> Classifier:
    """A classifier on head layer ``head_layers`` of a SimCLR model of this architecture (random weights)."""
    simclr = build_simclr(model_cfg)
    blocks = list(simclr.head.blocks[:head_layers])
    dim = simclr.head.out_dim_at(head_layers) if head_layers else simclr.encoder.feat_dim
    return Classifier(simclr.encoder, blocks, dim, num_classes)


def load_export(run_dir: str | Path, field_name: str) -> tuple[dict, dict]:
    """(state_dict, arch) of a finished run's exported model. ``field_name`` names the config field for errors."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULT_FILE).is_file():
        raise ConfigError(f"{field_name}: {run_dir} has no {RESULT_FILE}: that run has not finished; run it first")
    latest = ckpt.latest_whole(run_dir / "checkpoints")
    if latest is None:
        raise ConfigError(f"{field_name}: {run_dir} has no whole checkpoint to load")
    state = ckpt.load_state(latest)
    if "export" not in state:
        raise ConfigError(f"{field_name}: the last checkpoint of {run_dir} holds no exported model")
    return state["export"], ckpt.read_meta(latest)["arch"]


def load_encoder(run_dir: str, field_name: str) -> tuple[nn.Module, ModelSection, ProjectionHead]:
    """Encoder and projection head of a finished pretrain run (or the encoder of a classifier run)."""
    state, arch = load_export(run_dir, field_name)
    model_cfg = ModelSection.model_validate(arch["model"])
    simclr = build_simclr(model_cfg)
    if arch["kind"] == "simclr":
        simclr.load_state_dict(state)
    else:
        encoder_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        simclr.encoder.load_state_dict(encoder_state)
    return simclr.encoder, model_cfg, simclr.head


def top1_counts(model: nn.Module, ctx: StageContext, keys=None, label_map=None) -> tuple[int, int]:
    """(correct, total) on the eval split over all ranks: every sample is read exactly once across ranks."""
    cfg = ctx.cfg
    loader = pipeline.eval_loader(
        cfg.data.shards, cfg.data.eval_split, augment.EvalTransform(cfg.data.image_size),
        cfg.train.eval_batch_per_device, ctx.engine.rank, ctx.engine.world_size,
        keys=keys, label_map=label_map, on_error=cfg.data.on_error,
    )
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for batch in loader:
            x = batch["views"][0].to(ctx.device, non_blocking=True)
            with ctx.engine.autocast():
                pred = model(x).argmax(1).cpu()
            counts[0] += (pred == batch["y"]).sum()
            counts[1] += len(pred)
    D.all_reduce_sum(counts)
    model.train()
    return int(counts[0]), int(counts[1])


def accuracy_metrics(correct: int, total: int, num_classes: int) -> dict:
    """top-1 and chance-normalised top-1: (acc - 1/k) / (1 - 1/k), so 0 is chance and 1 is perfect at any k."""
    top1 = correct / max(1, total)
    chance = 1.0 / num_classes
    return {
        "top1": top1,
        "chance_norm_top1": (top1 - chance) / (1.0 - chance),
        "num_classes": num_classes,
        "eval_images": total,
    }


class PretrainTask:
    """SimCLR: two views, NT-Xent over the global batch (exact with gradient caching when micro < per-device batch)."""

    stage = "pretrain"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.cfg = ctx.cfg

    def build(self) -> nn.Module:
        return build_simclr(self.cfg.model)

    def batches(self, segment: int) -> Iterator[dict]:
        cfg = self.cfg
        transform = augment.SimCLRViews(
            cfg.data.image_size, cfg.data.augment, cfg.data.color_strength, crop_min_scale=cfg.data.crop_min_scale,
            on_device=cfg.data.device_augment,
        )
        return pipeline.train_loader(
            cfg.data.shards, cfg.data.train_split, transform, self.ctx.per_device, cfg.run.seed,
            self.ctx.engine.rank, self.ctx.engine.world_size, segment, cfg.data.num_workers, on_error=cfg.data.on_error,
        )

    def _loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        gather = D.all_gather_with_grad if self.ctx.engine.world_size > 1 else None
        return nt_xent(z_a, z_b, self.cfg.pretrain.temperature, gather=gather, rank=self.ctx.engine.rank)

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        engine, device = self.ctx.engine, self.ctx.device
        views = [v.to(device, non_blocking=True) for v in batch["views"]]
        if self.cfg.data.device_augment:  # uint8 crops + per-view colour/blur parameters: finish them here
            half = len(views) // 2
            views = [augment.finish_on_device(v, p) for v, p in zip(views[:half], views[half:])]
        x_a, x_b = views
        if engine.cuda and self.cfg.train.channels_last:
            x_a, x_b = x_a.contiguous(memory_format=torch.channels_last), x_b.contiguous(memory_format=torch.channels_last)
        n, m = x_a.shape[0], self.ctx.micro
        if m >= n:
            # Both views in one forward pass: BN sees 2n images, and DDP sees one forward per backward.
            with engine.autocast():
                z = model(torch.cat([x_a, x_b]))
            loss = self._loss(z[:n], z[n:])
            engine.backward(loss, last=True)
            return loss.detach()
        return self._cached_step(model, x_a, x_b, m)

    def _cached_step(self, model: nn.Module, x_a: torch.Tensor, x_b: torch.Tensor, m: int) -> torch.Tensor:
        """Gradient caching (Gao et al. 2021): the exact full-batch NT-Xent when only ``m`` images fit at once.

        1. embed every chunk without a graph; 2. loss and d(loss)/dz on the whole batch; 3. re-embed each chunk with a
        graph and backpropagate that cached dz. Plain accumulation would see negatives only within a micro-batch:
        a different, weaker loss. BN statistics are per chunk (as they are per device in DDP without SyncBN).
        """
        engine = self.ctx.engine
        chunks = [(x_a[i : i + m], x_b[i : i + m]) for i in range(0, x_a.shape[0], m)]
        with torch.no_grad():
            zs = []
            for c_a, c_b in chunks:
                with engine.autocast():
                    zs.append(model(torch.cat([c_a, c_b])).float())
        z_a = torch.cat([z[: len(z) // 2] for z in zs]).requires_grad_(True)
        z_b = torch.cat([z[len(z) // 2 :] for z in zs]).requires_grad_(True)
        loss = self._loss(z_a, z_b)
        loss.backward()  # gradients w.r.t. the embeddings only; collectives in the gather's backward run here
        g_a, g_b = z_a.grad.split(m), z_b.grad.split(m)
        for i, (c_a, c_b) in enumerate(chunks):
            last = i == len(chunks) - 1
            with engine.no_sync(model, last):
                with engine.autocast():
                    z = model(torch.cat([c_a, c_b])).float()
                surrogate = (z * torch.cat([g_a[i], g_b[i]])).sum()
                engine.backward(surrogate, last=last)
        return loss.detach()

    def evaluate(self, model: nn.Module) -> dict:
        return {}

    def export(self, model: nn.Module) -> tuple[dict, dict]:
        state = {k: v.cpu() for k, v in self.ctx.engine.unwrap(model).state_dict().items()}
        return state, {"kind": "simclr", "model": self.cfg.model.model_dump()}


class SupervisedTask:
    """Fine-tuning and transfer: a classifier on an encoder's head layer, on a labelled subset.

    ``linear``: the encoder is frozen, so its features are computed once (no augmentation) and only the linear layer
    is trained on them: the same optimum as the frozen-encoder protocol at a fraction of the cost. ``full``: every
    layer is trained on augmented images.
    """

    def __init__(self, ctx: StageContext, stage: str):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.stage = stage
        section = self.cfg.finetune if stage == "finetune" else self.cfg.transfer
        self.protocol = section.protocol
        self.encoder_field = f"{stage}.encoder"
        self.encoder_ref = section.encoder
        self.head_layers = self.cfg.finetune.from_head_layer if stage == "finetune" else 0
        self.index = read_index(self.cfg.data.shards)
        self._select()

    def _select(self) -> None:
        """The labelled training keys (and label map) of this run, saved to subset.json for the record."""
        cfg, split = self.cfg, self.index.splits[self.cfg.data.train_split]
        labels = list(split.labels)
        if self.stage == "finetune":
            indices = subsets.class_balanced_fraction(labels, cfg.finetune.label_fraction, cfg.run.seed)
            self.label_map = None
            self.num_classes = self.index.num_classes
            self.eval_keys = None
        else:
            k = cfg.transfer.num_classes or self.index.num_classes
            indices, chosen = subsets.class_subset(
                labels, k, cfg.transfer.class_seed, cfg.transfer.images_per_class, cfg.run.seed
            )
            self.label_map = {int(c): i for i, c in enumerate(sorted(chosen))}
            self.num_classes = k
            eval_split = self.index.splits[cfg.data.eval_split]
            self.eval_keys = [key for key, y in zip(eval_split.keys, eval_split.labels) if int(y) in self.label_map]
        self.train_keys = [split.keys[i] for i in indices]
        self.ctx.extra.update(train_images=len(self.train_keys), num_classes=self.num_classes)
        if self.ctx.engine.is_main:
            record = {"train_keys": self.train_keys, "label_map": self.label_map, "num_classes": self.num_classes}
            ckpt.write_json_atomic(self.ctx.run_dir / "subset.json", record)

    def _encoder(self) -> tuple[nn.Module, ModelSection, ProjectionHead]:
        if self.encoder_ref == "random":
            simclr = build_simclr(self.cfg.model)
            return simclr.encoder, self.cfg.model, simclr.head
        if not self.encoder_ref:
            raise ConfigError(f"{self.encoder_field}: empty; set it to a pretrain run directory (or 'random' for a baseline)")
        return load_encoder(self.encoder_ref, self.encoder_field)

    def build(self) -> nn.Module:
        encoder, self.model_cfg, head = self._encoder()
        if self.head_layers > len(head.blocks):
            raise ConfigError(
                f"finetune.from_head_layer: {self.head_layers} but the encoder's projection head has "
                f"{len(head.blocks)} layers; use 0..{len(head.blocks)}"
            )
        blocks = list(head.blocks[: self.head_layers])
        dim = head.out_dim_at(self.head_layers) if self.head_layers else encoder.feat_dim
        self.classifier = Classifier(encoder, blocks, dim, self.num_classes)
        if self.protocol == "full":
            return self.classifier
        self._extract_features()
        return self.classifier.linear

    def _extract_features(self) -> None:
        """Features of the labelled subset, identical on every rank (each rank embeds a share, then all gather)."""
        cfg, engine = self.cfg, self.ctx.engine
        extractor = self.classifier.to(self.ctx.device).eval()
        loader = pipeline.eval_loader(
            cfg.data.shards, cfg.data.train_split, augment.EvalTransform(cfg.data.image_size),
            cfg.train.eval_batch_per_device, engine.rank, engine.world_size,
            keys=self.train_keys, label_map=self.label_map, on_error=cfg.data.on_error,
        )
        rows = []
        with torch.no_grad():
            for batch in loader:
                with engine.autocast():
                    feats = extractor.features(batch["views"][0].to(self.ctx.device)).float().cpu()
                rows += list(zip(batch["keys"], feats, batch["y"].tolist()))
        rows = [row for part in D.all_gather_objects(rows) for row in part]
        rows.sort(key=lambda row: row[0])  # rank-independent order
        self.features = torch.stack([r[1] for r in rows])
        self.labels = torch.tensor([r[2] for r in rows], dtype=torch.long)

    def batches(self, segment: int) -> Iterator[dict]:
        cfg, engine = self.cfg, self.ctx.engine
        if self.protocol == "full":
            return pipeline.train_loader(
                cfg.data.shards, cfg.data.train_split, augment.SupervisedAugment(cfg.data.image_size),
                self.ctx.per_device, cfg.run.seed, engine.rank, engine.world_size, segment, cfg.data.num_workers,
                keys=self.train_keys, label_map=self.label_map, on_error=cfg.data.on_error,
            )
        return self._feature_batches(segment)

    def _feature_batches(self, segment: int) -> Iterator[dict]:
        """Random global batches of precomputed features; each rank takes its slice, so DDP sees one global batch."""
        gen = torch.Generator().manual_seed(self.cfg.run.seed * 1_000_003 + segment)
        n, per, rank = len(self.labels), self.ctx.per_device, self.ctx.engine.rank
        while True:
            idx = torch.randint(0, n, (per * self.ctx.engine.world_size,), generator=gen)[rank * per : (rank + 1) * per]
            yield {"views": (self.features[idx],), "y": self.labels[idx], "skipped": 0}

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return supervised_step(self.ctx, model, batch)

    def evaluate(self, model: nn.Module) -> dict:
        classifier = self.classifier
        if self.protocol == "linear":
            classifier.linear = self.ctx.engine.unwrap(model)
        correct, total = top1_counts(classifier.to(self.ctx.device), self.ctx, self.eval_keys, self.label_map)
        return accuracy_metrics(correct, total, self.num_classes)

    def export(self, model: nn.Module) -> tuple[dict, dict]:
        arch = {
            "kind": "classifier", "model": self.model_cfg.model_dump(), "head_layers": self.head_layers,
            "num_classes": self.num_classes,
        }
        return {k: v.cpu() for k, v in self.classifier.state_dict().items()}, arch


def supervised_step(ctx: StageContext, model: nn.Module, batch: dict, loss_fn=None) -> torch.Tensor:
    """Cross-entropy (or ``loss_fn(logits, batch_slice)``) over the per-device batch, in micro-batches if needed."""
    engine = ctx.engine
    x = batch["views"][0].to(ctx.device, non_blocking=True)
    y = batch["y"].to(ctx.device, non_blocking=True)
    n, m = len(y), ctx.micro
    total = torch.zeros((), device=ctx.device)
    starts = list(range(0, n, m))
    for i, s in enumerate(starts):
        last = i == len(starts) - 1
        with engine.no_sync(model, last):
            with engine.autocast():
                logits = model(x[s : s + m])
            part = loss_fn(logits.float(), x[s : s + m], y[s : s + m]) if loss_fn else F.cross_entropy(logits.float(), y[s : s + m])
            # Scale each micro-batch by its share so the step's gradient is that of the mean over the whole batch.
            loss = part * (len(y[s : s + m]) / n)
            engine.backward(loss, last=last)
        total += loss.detach()
    return total


class DistillTask:
    """A frozen teacher classifier teaches a student on unlabeled images: (1-a) * tau^2 * KL + a * CE on labels.

    With ``distill.teacher`` empty the run is the student's own baseline: cross-entropy on the labelled subset only,
    the same steps and batch, so each student's gain from distillation is measured against itself.
    """

    stage = "distill"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.index = read_index(self.cfg.data.shards)
        self.num_classes = self.index.num_classes
        d = self.cfg.distill
        if not d.teacher and d.label_weight != 1.0:
            raise ConfigError(
                "distill.teacher: empty means the no-distillation baseline, which needs distill.label_weight=1.0; "
                "set distill.teacher to a fine-tune run directory or label_weight to 1.0"
            )
        split = self.index.splits[self.cfg.data.train_split]
        idx = subsets.class_balanced_fraction(list(split.labels), d.label_fraction, self.cfg.run.seed)
        self.labelled = {split.keys[i] for i in idx}
        self.ctx.extra.update(num_classes=self.num_classes, labelled_images=len(self.labelled))

    def build(self) -> nn.Module:
        d = self.cfg.distill
        self.teacher = None
        if d.teacher:
            state, arch = load_export(d.teacher, "distill.teacher")
            if arch["kind"] != "classifier":
                raise ConfigError(f"distill.teacher: {d.teacher} is a {arch['kind']} run; a teacher must be a fine-tune run")
            if arch["num_classes"] != self.num_classes:
                raise ConfigError(
                    f"distill.teacher: {d.teacher} predicts {arch['num_classes']} classes but {self.cfg.data.shards} "
                    f"has {self.num_classes}"
                )
            teacher = build_classifier(ModelSection.model_validate(arch["model"]), arch["head_layers"], self.num_classes)
            teacher.load_state_dict(state)
            self.teacher = teacher.to(self.ctx.device).eval().requires_grad_(False)
            teacher_path = Path(d.teacher) / RESULT_FILE
            self.ctx.extra["teacher_top1"] = json.loads(teacher_path.read_text())["metrics"]["top1"]
            self.ctx.extra["teacher_backbone"] = arch["model"]["backbone"]
        student = build_classifier(self.cfg.model, 0, self.num_classes)
        if d.student_init:
            encoder, model_cfg, _ = load_encoder(d.student_init, "distill.student_init")
            if model_cfg.backbone != self.cfg.model.backbone or model_cfg.width != self.cfg.model.width:
                raise ConfigError(
                    f"distill.student_init: {d.student_init} is a {model_cfg.backbone} (width {model_cfg.width}) but "
                    f"model.backbone is {self.cfg.model.backbone} (width {self.cfg.model.width})"
                )
            student.encoder.load_state_dict(encoder.state_dict())
        self.student = student
        return student

    def batches(self, segment: int) -> Iterator[dict]:
        cfg, engine = self.cfg, self.ctx.engine
        keys = None if self.teacher is not None else sorted(self.labelled)
        return pipeline.train_loader(
            cfg.data.shards, cfg.data.train_split, augment.SupervisedAugment(cfg.data.image_size), self.ctx.per_device,
            cfg.run.seed, engine.rank, engine.world_size, segment, cfg.data.num_workers, keys=keys,
            on_error=cfg.data.on_error,
        )

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        d = self.cfg.distill
        if self.teacher is None:
            return supervised_step(self.ctx, model, batch)
        mask_all = torch.tensor([k in self.labelled for k in batch["keys"]], device=self.ctx.device)
        offsets = {"i": 0}

        def loss_fn(logits, x, y):
            s = offsets["i"]
            offsets["i"] += len(y)
            with torch.no_grad(), self.ctx.engine.autocast():
                teacher_logits = self.teacher(x).float()
            loss = (1.0 - d.label_weight) * distill_kl(logits, teacher_logits, d.temperature)
            mask = mask_all[s : s + len(y)]
            if d.label_weight > 0 and mask.any():
                ce = F.cross_entropy(logits[mask], y[mask], reduction="sum") / len(y)
                loss = loss + d.label_weight * ce
            return loss

        return supervised_step(self.ctx, model, batch, loss_fn)

    def evaluate(self, model: nn.Module) -> dict:
        correct, total = top1_counts(model, self.ctx)
        return accuracy_metrics(correct, total, self.num_classes)

    def export(self, model: nn.Module) -> tuple[dict, dict]:
        arch = {"kind": "classifier", "model": self.cfg.model.model_dump(), "head_layers": 0, "num_classes": self.num_classes}
        return {k: v.cpu() for k, v in self.ctx.engine.unwrap(model).state_dict().items()}, arch


TASKS = {
    "pretrain": PretrainTask,
    "finetune": lambda ctx: SupervisedTask(ctx, "finetune"),
    "transfer": lambda ctx: SupervisedTask(ctx, "transfer"),
    "distill": DistillTask,
}
