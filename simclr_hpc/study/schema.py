"""The study file's schema: one pydantic model per section, unknown keys are errors (what each section expands to:
``plan.py``; the checks across sections: ``spec.py``).

This module imports no torch: ``study submit --dry-run`` runs on a login node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from simclr_hpc import rundir
from simclr_hpc.config import Bool, Float, Int, Name, PathStr, UserError, check_safe_name
from simclr_hpc.study.contrasts import DistillPrimary, HeadLayerPrimary, Part, TransferPrimary

STUDENT_SEED_OFFSET = 1000
"""A pretrained distillation student of seed s starts from its encoder pretrained with seed s + this."""


class StudyError(UserError):
    """A study file is wrong: one line per problem, each naming the file and the dotted field."""


def nest_overrides(overrides: dict) -> dict:
    """``{"train.steps": 5, "model": {"width": 0.5}}`` -> ``{"train": {"steps": 5}, "model": {"width": 0.5}}``."""
    out: dict = {}
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {part} is both a value and a section")
        leaf = parts[-1]
        if isinstance(value, dict):
            node[leaf] = (
                {**node.get(leaf, {}), **nest_overrides(value)}
                if isinstance(node.get(leaf), dict)
                else nest_overrides(value)
            )
        else:
            node[leaf] = value
    return out


Overrides = dict[str, object]


class DatasetSpec(Part):
    source: PathStr
    """Source spec as ``simclr-hpc data shards`` takes it: ``mnist5k``, ``shapes:K``, ``cifar10:ROOT``, ``cifar100:ROOT``,
    ``stl10:ROOT``, ``imagefolder:DIR``, ``npz:FILE``. ``{data_root}`` is replaced by the study's ``data_root``."""
    shards: PathStr = ""
    """Shard directory; empty = ``<root>/<study>/data/<dataset name>``. Built before the first run if it has no index.json."""
    val_fraction: Float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction of the training images held out as the ``val`` split when the shards are built."""
    set: Overrides = {}
    """Config overrides for every run on this dataset (e.g. ``data.image_size: 28``)."""


class EncoderSpec(Part):
    dataset: Name
    """Dataset (a key of ``datasets``) the encoder is pretrained on with SimCLR."""
    base: Name = ""
    """Base-model label for the distillation same-base/cross-base comparison; empty = ``model.backbone`` of the encoder."""
    set: Overrides = {}
    """Config overrides of this encoder's pretrain run (``model.backbone``, ``pretrain.temperature``, ``train.steps`` ...).
    ``model.*`` also applies to every run that loads this encoder."""


class StageDefaults(Part):
    set: Overrides = {}
    """Config overrides for every run of this stage."""


def _fractions_ok(value: list[float]) -> list[float]:
    bad = [v for v in value if not 0.0 < v <= 1.0]
    if bad:
        raise ValueError(f"every label fraction must be in (0, 1], got {bad}")
    return value


class FinetuneStudy(Part):
    encoders: list[Name] = Field(min_length=1)
    """Encoders (keys of ``encoders``) to fine-tune."""
    dataset: Name = ""
    """Labelled dataset; empty = each encoder's pretraining dataset (the paper's semi-supervised setting)."""
    label_fractions: list[Float] = Field([1.0], min_length=1)
    """Fractions of labelled training images, drawn class-balanced per seed (e.g. 0.01, 0.1, 1.0)."""
    head_layers: list[Int] = Field([0], min_length=1)
    """Projection-head layers kept under the classifier (0 = encoder output)."""
    protocols: list[Literal["linear", "full"]] = Field(["linear"], min_length=1)
    """``linear`` (frozen encoder) and/or ``full`` (every layer trained)."""
    full_label_fractions: list[Float] | None = None
    """Label fractions fine-tuned under ``full`` (empty = every one of ``label_fractions``): a full fine-tune costs its
    steps at any fraction, so a study may keep it to the fractions its head-layer contrast needs."""

    def fractions(self, protocol: str) -> list[float]:
        """The label fractions fine-tuned under ``protocol``."""
        if protocol == "full" and self.full_label_fractions is not None:
            return [f for f in self.label_fractions if f in self.full_label_fractions]
        return self.label_fractions

    baselines: list[Literal["random", "pixels"]] = ["random", "pixels"]
    """Baselines run beside the encoders under the same protocol, split and seeds: ``random`` (a random-init encoder
    of each encoder architecture; under ``full``, that network trained from scratch) and ``pixels`` (a linear
    classifier on the raw pixels). [] for none."""
    primary: HeadLayerPrimary = HeadLayerPrimary()
    """The head-layer finding's primary contrast (the one its verdict is decided on)."""
    set: Overrides = {}
    """Config overrides for every fine-tune run of this section."""

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        return _fractions_ok(value)

    @field_validator("head_layers")
    @classmethod
    def _layers(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if not 0 <= v <= 4]
        if bad:
            raise ValueError(f"every head layer must be in 0..4, got {bad}")
        return value


class TeacherSpec(Part):
    encoder: Name
    """Encoder whose fine-tuned classifier teaches (a fine-tune run that this study produces, one per label fraction
    and seed, on the labelled subset its students' baselines get)."""
    protocol: Literal["linear", "full"] = "full"
    """Teacher fine-tuning protocol (SimCLRv2 fine-tunes its teachers fully)."""
    head_layer: Int = Field(0, ge=0, le=4)
    """Projection-head layer the teacher's classifier sits on."""
    set: Overrides = {}
    """Config overrides of this teacher's fine-tune runs."""


class StudentSpec(Part):
    encoder: Name = ""
    """Encoder that gives the student its architecture (``model.*``) and, with ``init: pretrained``, its weights."""
    init: Literal["random", "pretrained"] = "random"
    """``random`` (SimCLRv2's students): only the architecture; ``pretrained``: the encoder pretrained with SimCLR
    under another seed (``1000 + seed``, planned as a run of its own), so a student never starts from the weights its
    teacher was fine-tuned from and seeds stay independent."""
    base: Name = ""
    """Base label (architecture and recipe); empty = the encoder's base, or ``model.backbone`` from ``set``."""
    set: Overrides = {}
    """Config overrides of this student's distill and baseline runs (e.g. ``model.backbone`` for a random student)."""

    @model_validator(mode="after")
    def _needs_encoder(self) -> "StudentSpec":
        if self.init == "pretrained" and not self.encoder:
            raise ValueError("a student with init: pretrained needs an encoder (or set init: random)")
        return self


class DistillStudy(Part):
    dataset: Name
    """Dataset the teachers are fine-tuned on and the students distilled on."""
    label_fractions: list[Float] = Field([0.1], min_length=1)
    """Labels the teachers are fine-tuned on and each student's baseline is trained on (the same class-balanced subset
    per seed); the students are distilled on every training image without labels (SimCLRv2's regime: 1 % and 10 %)."""
    teachers: dict[Name, TeacherSpec] = Field(min_length=1)
    """Teacher name -> teacher."""
    students: dict[Name, StudentSpec] = Field(min_length=1)
    """Student name -> student."""
    pairs: Literal["all"] | list[tuple[Name, Name]] = "all"
    """``all`` (every teacher x every student) or a list of ``[teacher, student]`` names."""
    baseline: Bool = True
    """Also train each student on the labelled subset alone (no teacher) with the same steps: its baseline."""
    primary: DistillPrimary = DistillPrimary()
    """The distillation finding's primary contrast."""
    set: Overrides = {}
    """Config overrides for every distill run (and baseline) of this section."""
    teacher_set: Overrides = {}
    """Config overrides for every teacher fine-tune run."""

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        return _fractions_ok(value)


class WithinTarget(Part):
    dataset: Name
    """Target dataset whose classes are subsampled."""
    num_classes: list[Int] = Field(min_length=1)
    """Class counts k (each at least 2 and at most the dataset's class count)."""
    draws: Int = Field(1, ge=1, le=1000)
    """Nested class subsets per seed: each draw is a random order of the dataset's classes (from the run's seed and
    the draw), and its k-class subset is the first k of that order, so the subsets of one draw are nested (2 within
    5 within 10 ...). k = all classes is one run per seed, whatever the draws."""

    @field_validator("num_classes")
    @classmethod
    def _k(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if v < 2]
        if bad:
            raise ValueError(f"every class count must be at least 2, got {bad}")
        return value


class TransferStudy(Part):
    encoders: list[Name] = Field(min_length=1)
    """Source encoders."""
    protocols: list[Literal["linear", "full"]] = Field(["linear"], min_length=1)
    """Transfer protocols."""
    baselines: list[Literal["random", "pixels"]] = ["random", "pixels"]
    """Baselines run beside the encoders under the same protocol, split and seeds: ``random`` (a random-init encoder
    of each encoder architecture; under ``full``, that network trained from scratch) and ``pixels`` (a linear
    classifier on the raw pixels). [] for none."""
    images_per_class: Int = Field(0, ge=0)
    """Training images per class (0 = all), so class counts are compared at equal data per class."""
    within: list[WithinTarget] = []
    """Class-subset sweeps inside one dataset (class count without the dataset confound)."""
    across: list[Name] = []
    """Whole target datasets (all classes), as the paper compared them."""
    primary: TransferPrimary = TransferPrimary()
    """The transfer finding's primary contrast."""
    set: Overrides = {}
    """Config overrides for every transfer run."""

    @model_validator(mode="after")
    def _something(self) -> "TransferStudy":
        if not self.within and not self.across:
            raise ValueError("transfer needs at least one of within or across")
        return self


class Study(Part):
    """A whole study file."""

    name: Name
    """Study name: ``run.study`` of every run; runs go under ``<root>/<name>/``."""
    root: PathStr = "runs"
    """Directory holding every study's runs (relative to the working directory, or absolute)."""
    data_root: PathStr = ""
    """Replaces ``{data_root}`` in dataset sources (e.g. where CIFAR-10 lives on the cluster)."""
    seeds: list[Int] = Field([0], min_length=1)
    """Seeds: each encoder is pretrained once per seed and every downstream run uses the encoder of its own seed, so a
    seed is one independent replicate of the whole pipeline: the unit of every interval and verdict."""
    alpha: Float = Field(0.05, gt=0.0, lt=0.5)
    """Family-wise error rate of the verdicts: Holm's adjustment over the findings the study tests."""
    defaults: Overrides = {}
    """Config overrides for every run of the study (nested sections or dotted keys)."""
    datasets: dict[Name, DatasetSpec] = Field(min_length=1)
    """Dataset name -> source."""
    encoders: dict[Name, EncoderSpec] = Field(min_length=1)
    """Encoder name -> SimCLR pretrain run."""
    pretrain: StageDefaults = StageDefaults()
    """Overrides for every pretrain run."""
    finetune: FinetuneStudy | None = None
    distill: DistillStudy | None = None
    transfer: TransferStudy | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_safe_name(value, "name")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if any(v < 0 or v >= STUDENT_SEED_OFFSET for v in value):
            bad = [v for v in value if not 0 <= v < STUDENT_SEED_OFFSET]
            raise ValueError(f"seeds must be in 0..{STUDENT_SEED_OFFSET - 1}, got {bad[:5]}")
        if len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct, got {value}")
        return value

    @field_validator("datasets", "encoders")
    @classmethod
    def _keys(cls, value: dict, info) -> dict:
        for key in value:
            check_safe_name(key, f"{info.field_name} name")
        return value

    def source(self, dataset: str) -> str:
        """The dataset's source spec with ``{data_root}`` filled in."""
        return self.datasets[dataset].source.replace("{data_root}", self.data_root.rstrip("/") or ".")

    def shards_dir(self, dataset: str) -> Path:
        """Where the dataset's shards live (built there if missing)."""
        given = self.datasets[dataset].shards.replace("{data_root}", self.data_root.rstrip("/") or ".")
        return Path(given) if given else rundir.data_dir(self.root, self.name, dataset)

    def encoder_base(self, encoder: str) -> str:
        """Base-model label of an encoder (explicit ``base`` or its backbone)."""
        spec = self.encoders[encoder]
        if spec.base:
            return spec.base
        model = nest_overrides(self.defaults).get("model", {}) | nest_overrides(spec.set).get("model", {})
        return str(model.get("backbone", "resnet18"))
