# One module on purpose (over 300 lines): every config section and its field docs read top to bottom as the schema's reference.
"""Typed, validated run configuration.

A run's configuration is built in layers: the defaults below (pretraining's), the recipe of the run's stage when it is
known (``recipes.py``), a YAML file that holds only what differs from them, and ``--set a.b=c`` overrides. Unknown keys, wrong types and impossible values are errors that name the dotted field.

This module imports no torch: ``--help``, ``config validate`` and ``submit --dry-run`` must start fast on a login node.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from simclr_hpc import rundir
from simclr_hpc.readers import FileError, UserError, quote, yaml_value
from simclr_hpc.readers import read_yaml as _read_mapping
from simclr_hpc.recipes import stage_recipe

STAGES = ("pretrain", "finetune", "distill", "transfer")
BASELINE_ENCODERS = ("random", "pixels")
"""Encoder names of ``finetune.encoder`` / ``transfer.encoder`` that are baselines, not run directories: ``random``
(a random-init encoder of ``model.*``; under ``full``, the network trained from scratch) and ``pixels`` (the flattened
normalised image; linear only)."""
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

# Names end up in paths, job names and sbatch scripts: keep them to a charset that needs no quoting anywhere.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean (true/false)")
    return value


# Strict field types: ``--set train.steps=true`` must not run 1 step, ``steps: 2.5`` must not run 2, ``sync_bn: 1``
# is not a yes/no. Floats still take integers (``base_lr: 1``) and YAML 1.1's quoted-looking ``1e-6``.
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_not_bool)]
Bool = Annotated[bool, Strict()]
# Upper bounds a user can hit by a typo (an extra zero, 1e20): far above any real run, low enough that nothing is
# allocated, scheduled or waited for on a value no machine could serve.
MAX_BATCH = 1 << 20
MAX_STEPS = 100_000_000
MAX_SEED = 2**32 - 1  # numpy's seed range


class ConfigError(UserError):
    """A config file, override or value is wrong."""


def _digits_as_name(value: Any) -> Any:
    """A name written as a bare number (``name: 2024``, ``--set run.name=2024``) is that name: names are text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _plain_path(value: Any) -> Any:
    if isinstance(value, str) and any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("holds a control character (a NUL, a newline, ...), which a path here cannot; fix the path")
    if isinstance(value, str) and len(value) > 4096:
        raise ValueError("is longer than 4096 characters, more than any path")
    return value


PathStr = Annotated[str, BeforeValidator(_plain_path)]
"""A path a run reads or writes: no control characters (a NUL cannot be in a path; a newline would break the sbatch
script and every log line that names it)."""

Name = Annotated[str, BeforeValidator(_digits_as_name)]
"""A name (run, study, dataset, encoder, ...): text, or digits that YAML read as a number."""


def check_safe_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe name for a path component, job name and shell word; raise otherwise."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class RunSection(Section):
    name: Name = "default"
    """Run name: the last component of the run directory. Letters, digits, '.', '_', '-'."""
    study: Name = "adhoc"
    """Study name: groups runs under ``<root>/<study>/``."""
    root: PathStr = "runs"
    """Directory that holds every study's runs (relative to the working directory, or absolute)."""
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    """Seed for initialisation, data order, augmentation and subset selection."""

    @field_validator("name", "study")
    @classmethod
    def _safe(cls, value: str, info) -> str:
        return check_safe_name(value, f"run.{info.field_name}")


class DataSection(Section):
    shards: PathStr = "data/shapes10"
    """Directory with WebDataset shards and ``index.json`` (made by ``simclr-hpc data shards``)."""
    train_split: str = "train"
    """Split that training reads."""
    eval_split: str = "test"
    """Held-out split on which top-1 is reported."""
    val_split: str = "val"
    """Held-out split that linear probes choose their penalty on and the pretraining monitor scores (never the
    eval split). Shards without it (``data shards`` without ``--val-fraction``): probes choose on a held-out fifth of
    their labelled images, and the monitor on training images outside its bank."""
    image_size: Int = Field(32, ge=8, le=1024)
    """Side of the square crop the model sees, in pixels. 32 for CIFAR-like data, 224 for ImageNet-like."""
    augment: Literal["cifar", "imagenet"] = "cifar"
    """SimCLR augmentation preset: ``cifar`` (no blur, as in the paper's CIFAR runs) or ``imagenet`` (with blur)."""
    color_strength: Float = Field(0.5, ge=0.0, le=2.0)
    """Colour-jitter strength s of SimCLR (0.5 for CIFAR, 1.0 for ImageNet)."""
    crop_min_scale: Float = Field(0.08, gt=0.0, le=1.0)
    """Smallest area fraction of a random resized crop (SimCLR: 0.08; small images with small objects do better higher)."""
    flip: Float = Field(0.5, ge=0.0, le=1.0)
    """Probability that a view (pretraining, distillation, full fine-tuning) is mirrored left-right. SimCLR: 0.5, for
    photographs; 0 for data whose classes a mirror changes or confuses (digits, letters): on the demo's MNIST, 0
    raised the linear probe at 10 % of the labels by about 5 points."""
    device_augment: Bool = False
    """Pretrain: colour jitter, grayscale, blur and normalisation run batched on the training device (the GPU) instead
    of in the loader workers, which then only decode, crop and flip. Same augmentations; for when the CPUs starve the GPU."""
    batch_augment: Bool = True
    """Pretrain on shards whose images all have one size (``index.json``'s image_size: MNIST, CIFAR, generated
    shapes): crops, flips, blur and colour run once per batch in the loader instead of image by image, 3-4x less CPU.
    Same augmentation distributions; the crops are interpolated bilinearly (``roi_align``) rather than by a rounded
    uint8 resize. ``false``: image by image. Ignored with ``device_augment``."""
    decode_on_device: Bool = False
    """Pretrain on JPEG shards (224 px ImageNet): loader workers only read each file and draw its views' crops, flips,
    blur and colour; decoding (``torchvision.io.decode_jpeg``, batched, nvJPEG on a GPU) and the views' pixel work run
    on the training device in one pass. Takes precedence over ``device_augment`` and ``batch_augment``."""
    num_workers: Int = Field(2, ge=0, le=64)
    """DataLoader worker processes per rank; also the training stream's streams per rank, on which its batches depend.
    Fewer run when the task's CPUs cannot hold them beside training (a divisor of this, with a warning; same batches)."""
    shuffle_buffer_mb: Float = Field(256, gt=0, le=65536)
    """Shuffle-buffer memory of one rank's training streams together, in MB of encoded samples (a 110 kB ImageNet
    JPEG: 256 MB over 10 streams mixes about 230 of them per stream). Part of the batches' identity."""
    on_error: Literal["raise", "skip"] = "raise"
    """What a corrupt sample does: ``raise`` stops naming shard and key; ``skip`` drops it and counts it."""

    @model_validator(mode="after")
    def _val_split_held_out(self) -> DataSection:
        if self.val_split and self.val_split in (self.train_split, self.eval_split):
            raise ValueError(
                f"val_split {self.val_split!r} is the train or eval split too; choosing a probe's "
                "penalty there would tune on the data it is scored on (use 'val', or '' to hold out "
                "part of the labelled images)"
            )
        return self


class ModelSection(Section):
    backbone: str = "resnet18"
    """torchvision ResNet depth: one of resnet18, resnet34, resnet50, resnet101, resnet152."""
    cifar_stem: Bool = True
    """3x3 stride-1 first convolution and no max-pool, for 32 px images."""
    width: Float = Field(1.0, gt=0.0, le=4.0)
    """Channel multiplier of every stage (1.0 = torchvision's widths)."""
    proj_layers: Int = Field(2, ge=1, le=4)
    """Depth of the projection head (SimCLRv1: 2, SimCLRv2: 3)."""
    proj_hidden_dim: Int = Field(0, ge=0, le=65536)
    """Width of the head's hidden layers; 0 means the encoder's feature width."""
    proj_dim: Int = Field(128, ge=1, le=65536)
    """Output width of the projection head (z)."""

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value: str) -> str:
        if value not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r}; allowed: {', '.join(BACKBONES)}")
        return value


class OptimSection(Section):
    name: Literal["lars", "sgd", "adamw"] = "lars"
    """Optimizer. LARS excludes BN and bias from weight decay and trust-ratio adaptation."""
    base_lr: Float = Field(0.3, gt=0.0, le=100.0)
    """Learning rate at ``base_batch``; the run's LR is derived by ``lr_scaling``."""
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    """LR rule: linear = base_lr * B/base_batch; sqrt = base_lr * sqrt(B/base_batch); none = base_lr."""
    base_batch: Int = Field(256, ge=1, le=MAX_BATCH)
    """Reference global batch of ``base_lr``."""
    weight_decay: Float = Field(1e-6, ge=0.0, le=1.0)
    """Weight decay (not applied to BN and bias parameters)."""
    momentum: Float = Field(0.9, ge=0.0, lt=1.0)
    """Momentum for LARS/SGD; beta1 for AdamW."""
    warmup_steps: Int = Field(10, ge=0, le=MAX_STEPS)
    """Linear warmup from 0 to the scaled LR, then cosine decay to ``min_lr_ratio`` times it."""
    min_lr_ratio: Float = Field(0.0, ge=0.0, le=1.0)
    """Final LR as a fraction of the scaled LR."""
    lars_eta: Float = Field(0.001, gt=0.0, le=1.0)
    """LARS trust coefficient."""


class TrainSection(Section):
    steps: Int = Field(100, ge=1, le=MAX_STEPS)
    """Optimizer steps of the run."""
    global_batch: Int = Field(256, ge=1, le=MAX_BATCH)
    """Images per optimizer step over all ranks: the one batch number a user sets."""
    max_batch_per_device: Int = Field(0, ge=0, le=MAX_BATCH)
    """Largest micro-batch one device may hold; 0 = no limit. Above it, gradient caching (pretrain) or accumulation."""
    ckpt_every_steps: Int = Field(50, ge=1, le=MAX_STEPS)
    """Checkpoint interval in steps (a checkpoint is also written at the end)."""
    log_every_steps: Int = Field(10, ge=1, le=MAX_STEPS)
    """Interval of ``metrics.jsonl`` lines and log lines."""
    eval_batch_per_device: Int = Field(256, ge=1, le=MAX_BATCH)
    """Batch size of evaluation and feature extraction, per device."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """``auto``: bf16 autocast on a GPU with bf16 in hardware (Ampere and newer), fp16 with dynamic loss scaling on
    older GPUs (V100, T4), fp32 on CPU. ``fp16`` and ``bf16`` also run on CPU (slower than fp32 there)."""
    channels_last: Bool = True
    """Use channels_last memory format for the model and pretraining's inputs (on CPU too: a ResNet-18 at 1/4 width
    and 28 px pretrains 12 % faster on one core with it). The DeepSpeed engine keeps its weights contiguous (ZeRO
    flattens them) and converts only the inputs."""
    sync_bn: Bool = False
    """Convert BatchNorm to SyncBatchNorm so BN statistics span the global batch."""
    compile: Bool = False
    """Wrap the model in torch.compile."""
    collective_timeout_s: Int = Field(600, ge=10, le=7 * 24 * 3600)
    """A collective that waits longer than this ends the job instead of hanging the allocation; also the deadline of
    the ranks' first meeting (the rendezvous at MASTER_ADDR:MASTER_PORT)."""
    keep_checkpoints: Int = Field(2, ge=1, le=1000)
    """How many whole checkpoints to keep on disk."""


class LogSection(Section):
    backends: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = ["jsonl", "tensorboard"]
    """Where training scalars go: ``jsonl`` (``metrics.jsonl``, always on), ``tensorboard`` (event files in the run
    directory), ``wandb`` (offline runs under the run directory; ``wandb sync`` them later) and ``mlflow`` (a local file
    store ``<root>/<study>/mlruns``). W&B and MLflow need their packages (``pip install simclr-hpc[wandb]`` / ``[mlflow]``);
    nothing goes over the network at run time."""

    @field_validator("backends")
    @classmethod
    def _jsonl_always(cls, value: list[str]) -> list[str]:
        # metrics.jsonl is what resume, reports and the other backends' step bookkeeping read: it cannot be turned off.
        return ["jsonl"] + [b for b in dict.fromkeys(value) if b != "jsonl"]


class DistSection(Section):
    engine: Literal["ddp", "deepspeed"] = "ddp"
    """Distributed engine: ``ddp`` (Accelerate) or ``deepspeed`` (ZeRO)."""
    zero_stage: Int = Field(0, ge=0, le=3)
    """DeepSpeed ZeRO stage (engine=deepspeed only)."""
    offload_optimizer: Bool = False
    """DeepSpeed: keep optimizer state in CPU memory (ZeRO 2/3)."""


class PretrainSection(Section):
    temperature: Float = Field(0.5, gt=0.0, le=10.0)
    """NT-Xent temperature tau (0.5 for CIFAR, 0.1 for ImageNet at large batch)."""
    monitor_every_steps: Int = Field(0, ge=0)
    """Interval of online monitoring (kNN top-1 on ``data.val_split``, never the eval split; alignment, uniformity,
    std, positive rank-1 of ``z`` and of ``h``; ``train/monitor.py``), also done at the end; 0 = off. Costs a forward
    pass over the monitor's images each time."""
    monitor_bank_images: Int = Field(2000, ge=1)
    """Labelled training images in the monitor's kNN feature bank (class-balanced; decoded once, kept in memory)."""
    monitor_eval_images: Int = Field(1000, ge=1)
    """Held-out images (of ``data.val_split``) whose kNN top-1 the monitor reports (class-balanced)."""
    monitor_pairs: Int = Field(256, ge=2)
    """Held-out images whose two fixed views give the monitor's alignment, uniformity, std and positive rank-1."""


class FinetuneSection(Section):
    encoder: PathStr = ""
    """Pretrain run directory whose encoder is fine-tuned, or a baseline: ``random`` or ``pixels``."""
    label_fraction: Float = Field(1.0, gt=0.0, le=1.0)
    """Fraction of labelled training images, drawn class-balanced with ``run.seed``."""
    label_subset_file: PathStr = ""
    """A file listing exactly the labelled training images, one shard key or file name per line (the published 1 % /
    10 % ImageNet lists of google-research/simclr, VISSL subset files); its sha256 is recorded. Empty: use
    ``label_fraction``."""
    from_head_layer: Int = Field(0, ge=0, le=4)
    """Projection-head layers kept under the classifier (0 = encoder output, as in SimCLRv2)."""
    protocol: Literal["linear", "full"] = "linear"
    """``linear``: frozen encoder, classifier on features; ``full``: every layer trained."""

    @model_validator(mode="after")
    def _one_subset_rule(self) -> "FinetuneSection":
        if self.label_subset_file and self.label_fraction != 1.0:
            raise ValueError("label_subset_file and label_fraction both choose the labelled images; set only one")
        return self


class DistillSection(Section):
    teacher: PathStr = ""
    """Fine-tune run directory of the frozen teacher classifier."""
    student_init: PathStr = ""
    """Empty: random student; otherwise a pretrain run directory of the student's own SimCLR encoder."""
    temperature: Float = Field(1.0, gt=0.0, le=100.0)
    """Distillation temperature tau; the KL term is scaled by tau^2."""
    label_weight: Float = Field(0.0, ge=0.0, le=1.0)
    """Weight alpha of the cross-entropy on labels; the KL term gets 1 - alpha."""
    label_fraction: Float = Field(1.0, gt=0.0, le=1.0)
    """Fraction of labels the label loss may see (class-balanced, seeded); the KL term uses every image."""


class TransferSection(Section):
    encoder: PathStr = ""
    """Pretrain (or fine-tune) run directory whose encoder is transferred, or a baseline: ``random`` or ``pixels``."""
    num_classes: Int = Field(0, ge=0, le=1_000_000)
    """Restrict the target dataset to k classes: the first k of draw ``class_seed``'s order of the classes for the
    run's seed (``data/subsets.class_order``), so the subsets of one draw are nested; 0 = every class."""
    class_seed: Int = Field(0, ge=0, le=MAX_SEED)
    """Which draw of nested class subsets (a study sets 0..draws-1; several draws give the spread over classes)."""
    images_per_class: Int = Field(0, ge=0, le=100_000_000)
    """Training images per class (0 = all), so class counts are compared at equal data per class."""
    protocol: Literal["linear", "full"] = "linear"
    """``linear``: frozen encoder; ``full``: every layer trained."""

    @field_validator("num_classes")
    @classmethod
    def _not_one(cls, value: int) -> int:
        if value == 1:
            raise ValueError(
                "1 class is no classification task (any encoder scores 100 %); use 0 (every class) or 2..K"
            )
        return value


class Config(Section):
    """The whole resolved configuration of one run."""

    run: RunSection = RunSection()
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()
    dist: DistSection = DistSection()
    log: LogSection = LogSection()
    pretrain: PretrainSection = PretrainSection()
    finetune: FinetuneSection = FinetuneSection()
    distill: DistillSection = DistillSection()
    transfer: TransferSection = TransferSection()

    @model_validator(mode="after")
    def _cross_field(self) -> "Config":
        if self.dist.engine == "ddp" and self.dist.zero_stage != 0:
            raise ValueError(
                "dist.zero_stage: ZeRO needs dist.engine=deepspeed (set dist.engine=deepspeed or zero_stage=0)"
            )
        if self.dist.engine == "ddp" and self.dist.offload_optimizer:
            raise ValueError("dist.offload_optimizer: needs dist.engine=deepspeed")
        if self.dist.offload_optimizer and self.dist.zero_stage == 0:
            raise ValueError("dist.offload_optimizer: needs dist.zero_stage 1, 2 or 3")
        if self.dist.engine == "deepspeed" and self.optim.name == "lars" and self.dist.zero_stage >= 3:
            # ZeRO 1/2 hand LARS flat slices, which it maps back to parameters (optim.LARS.set_partitions); ZeRO 3's
            # partitioning is not mapped.
            raise ValueError(
                "optim.name: LARS needs each parameter's norms, which ZeRO 3 partitions in a way it does not read; "
                "use dist.zero_stage 0, 1 or 2, or optim.name=sgd or adamw"
            )
        for stage, section in (("finetune", self.finetune), ("transfer", self.transfer)):
            if section.encoder == "pixels" and section.protocol != "linear":
                raise ValueError(
                    f"{stage}.encoder: pixels is the raw-pixel linear baseline; set {stage}.protocol=linear "
                    "(the from-scratch baseline of full fine-tuning is encoder=random)"
                )
        if self.train.max_batch_per_device and self.train.global_batch % self.train.max_batch_per_device:
            raise ValueError("train.max_batch_per_device: must divide train.global_batch")
        return self

    def run_dir(self, stage: str) -> Path:
        """``<root>/<study>/<stage>/<name>``: where this run writes everything."""
        return rundir.run_dir(self.run.root, self.run.study, stage, self.run.name)

    def hash(self, stage: str) -> str:
        """Short content hash of what a ``stage`` run reads from this config (stable across key order).

        Every stage reads ``run`` (name, study, seed), ``data``, ``model`` (pretrain and distill build it; fine-tune
        and transfer build it for ``encoder=random``), ``optim``, ``train`` and ``dist``, and of the stage sections
        only its own (``pretrain.temperature``; ``finetune.*``; ``distill.*``; ``transfer.*``): no stage reads another
        stage's section, so changing one (a distill default, say) must not make a finished pretrain run look changed
        and refuse its resume. ``run.root`` is left out: where runs are stored (relative or absolute, moved or not) is
        not part of the experiment, and a job submitted with an absolute root must resume a run started with a
        relative one. The runner records this hash in result.json and every checkpoint, and compares it with the
        run directory's config.yaml before resuming. ``log`` is left out too: adding a tracking backend to a resumed
        run does not change what it computes.
        """
        if stage not in STAGES:
            raise ConfigError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
        content = self.model_dump(mode="json")
        content["run"].pop("root")
        content.pop("log")
        for other in STAGES:
            if other != stage:
                content.pop(other)
        text = json.dumps(content, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `simclr-hpc config show` lists every key)"
        elif "input" in item and item["type"] not in ("missing",) and not isinstance(item["input"], dict):
            msg = f"{msg} (got {quote(item['input'])})"
        where = f"{prefix}{loc}" if loc else prefix.rstrip(": ") or "config"
        lines.append(f"{where}: {msg}")
    return lines


def deep_merge(base: dict, delta: dict) -> dict:
    """Return ``base`` updated recursively with ``delta`` (neither is modified)."""
    out = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str]) -> dict:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict. Values are parsed as YAML scalars (``1`` -> int, ``true`` -> bool)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, for example --set train.steps=200")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty part in key {key!r}")
        try:
            value = yaml_value(raw, f"--set {key}")
        except FileError as err:
            raise ConfigError(err.lines) from None
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is both a value and a section")
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping through the one reader (``readers.read_yaml``); a problem is a ConfigError naming it."""
    try:
        return _read_mapping(path, "config file")
    except FileError as err:
        raise ConfigError(err.lines) from None


def build_config(layers: list[dict], source: str = "") -> Config:
    """Validate the merged layers into a Config, raising ConfigError with one line per problem."""
    merged: dict = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_errors(err, f"{source}: " if source else "")) from None


def stage_problems(stage: str, cfg: "Config") -> list[str]:
    """What a config cannot do for ``stage`` although every field is valid on its own (the sections do not know the
    stage): checked by ``load_config(stage=)``, by the runner and by a study's planner."""
    if stage == "pretrain" and cfg.train.global_batch < 2:
        return [
            f"train.global_batch: {cfg.train.global_batch} image per step gives SimCLR no negatives (its loss is 0 "
            "whatever the encoder); use at least 2 (the paper: 256 to 4096)"
        ]
    return []


STUDY_KEYS = frozenset({"datasets", "encoders", "seeds", "defaults", "data_root"})
"""Top-level keys of a study file that no run config has: a file holding them was given to the wrong command."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, stage: str | None = None) -> Config:
    """Defaults, then ``stage``'s recipe (when given), then the YAML file at ``path`` (deltas only), then ``--set``."""
    layers = []
    if path:
        layers.append(read_yaml(path))
        if STUDY_KEYS & set(layers[0]):
            raise ConfigError(
                f"{path}: a study file (it has {', '.join(sorted(STUDY_KEYS & set(layers[0])))}), not "
                f"a run config; run it with `simclr-hpc study run {path}` or `study submit`"
            )
    if overrides:
        layers.append(parse_overrides(overrides))
    if stage:
        layers.insert(0, stage_recipe(stage, layers))
    cfg = build_config(layers, source=str(path) if path else "")
    if stage and (problems := stage_problems(stage, cfg)):
        raise ConfigError(problems)
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, as written to ``config.yaml`` before a run's first step."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_fields(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted name, type, default, docstring) of every field: for ``config show --docs`` and the README."""
    rows = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(config_fields(ann, f"{prefix}{name}."))
        else:
            rows.append((f"{prefix}{name}", getattr(ann, "__name__", str(ann)), info.default, info.description or ""))
    return rows
