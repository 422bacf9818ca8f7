"""The study file: a whole fine-tuning / distillation / transfer study of arXiv 2108.00587 in one YAML file.

A study names its datasets (a source spec each, shards built once), its SimCLR encoders (pretrain runs), and up to three
sections that expand into runs (see ``plan.py``):

``finetune``
    encoders x label fractions x projection-head layer x protocol x seeds.
``distill``
    teachers (fine-tune runs of study encoders) x students, each student also trained without a teacher as its own baseline.
``transfer``
    encoders x target datasets x class counts k (several random k-class subsets per k, a fixed number of images per class)
    x protocol x seeds, plus whole-dataset rows across datasets as the paper did.

``load_study(path)`` validates everything before anything runs: the schema (unknown keys, wrong types, bad values),
dataset sources, class counts, distill pairs, and every expanded run config (``simclr_hpc.config.build_config``).
Each problem is one line of a single :class:`StudyError`.

This module imports no torch: ``study submit --dry-run`` runs on a login node.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simclr_hpc.config import SAFE_NAME, UserError, format_errors, check_safe_name, read_yaml
from simclr_hpc.readers import FileError, read_json

# Class counts of the fixed-size sources; ``shapes:K`` has K, imagefolder/npz are counted on disk.
KNOWN_CLASS_COUNTS = {"mnist5k": 10, "cifar10": 10, "cifar100": 100, "stl10": 10}
SOURCE_KINDS = ("mnist5k", "shapes", "cifar10", "cifar100", "stl10", "imagefolder", "npz")
SHAPES_DEFAULT_CLASSES = 10


class StudyError(UserError):
    """A study file is wrong: one line per problem, each naming the file and the dotted field."""


def _nest(overrides: dict) -> dict:
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
            node[leaf] = {**node.get(leaf, {}), **_nest(value)} if isinstance(node.get(leaf), dict) else _nest(value)
        else:
            node[leaf] = value
    return out


class Part(BaseModel):
    """Base of every study-file section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


Overrides = dict[str, object]


class DatasetSpec(Part):
    source: str
    """Source spec as ``simclr-hpc data shards`` takes it: ``mnist5k``, ``shapes:K``, ``cifar10:ROOT``, ``cifar100:ROOT``,
    ``stl10:ROOT``, ``imagefolder:DIR``, ``npz:FILE``. ``{data_root}`` is replaced by the study's ``data_root``."""
    shards: str = ""
    """Shard directory; empty = ``<root>/<study>/data/<dataset name>``. Built before the first run if it has no index.json."""
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction of the training images held out as the ``val`` split when the shards are built."""
    set: Overrides = {}
    """Config overrides for every run on this dataset (e.g. ``data.image_size: 28``)."""


class EncoderSpec(Part):
    dataset: str
    """Dataset (a key of ``datasets``) the encoder is pretrained on with SimCLR."""
    base: str = ""
    """Base-model label for the distillation same-base/cross-base comparison; empty = ``model.backbone`` of the encoder."""
    set: Overrides = {}
    """Config overrides of this encoder's pretrain run (``model.backbone``, ``pretrain.temperature``, ``train.steps`` ...).
    ``model.*`` also applies to every run that loads this encoder."""


class StageDefaults(Part):
    set: Overrides = {}
    """Config overrides for every run of this stage."""


class FinetuneStudy(Part):
    encoders: list[str] = Field(min_length=1)
    """Encoders (keys of ``encoders``) to fine-tune."""
    dataset: str = ""
    """Labelled dataset; empty = each encoder's pretraining dataset (the paper's semi-supervised setting)."""
    label_fractions: list[float] = Field([1.0], min_length=1)
    """Fractions of labelled training images, drawn class-balanced per seed (e.g. 0.01, 0.1, 1.0)."""
    head_layers: list[int] = Field([0], min_length=1)
    """Projection-head layers kept under the classifier (0 = encoder output)."""
    protocols: list[Literal["linear", "full"]] = Field(["linear"], min_length=1)
    """``linear`` (frozen encoder) and/or ``full`` (every layer trained)."""
    set: Overrides = {}
    """Config overrides for every fine-tune run of this section."""

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if not 0.0 < v <= 1.0]
        if bad:
            raise ValueError(f"every label fraction must be in (0, 1], got {bad}")
        return value

    @field_validator("head_layers")
    @classmethod
    def _layers(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if not 0 <= v <= 4]
        if bad:
            raise ValueError(f"every head layer must be in 0..4, got {bad}")
        return value


class TeacherSpec(Part):
    encoder: str
    """Encoder whose fine-tuned classifier teaches (a fine-tune run that this study produces)."""
    label_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """Labels the teacher is fine-tuned on."""
    protocol: Literal["linear", "full"] = "full"
    """Teacher fine-tuning protocol."""
    head_layer: int = Field(0, ge=0, le=4)
    """Projection-head layer the teacher's classifier sits on."""
    set: Overrides = {}
    """Config overrides of this teacher's fine-tune run."""


class StudentSpec(Part):
    encoder: str = ""
    """Encoder that gives the student its backbone (``model.*``) and, with ``init: pretrained``, its initial weights."""
    init: Literal["pretrained", "random"] = "pretrained"
    """``pretrained``: start from the encoder's SimCLR weights; ``random``: only its architecture."""
    base: str = ""
    """Base-model label; empty = the encoder's base, or ``model.backbone`` from ``set``."""
    set: Overrides = {}
    """Config overrides of this student's distill and baseline runs (e.g. ``model.backbone`` for a random student)."""

    @model_validator(mode="after")
    def _needs_encoder(self) -> "StudentSpec":
        if self.init == "pretrained" and not self.encoder:
            raise ValueError("a student with init: pretrained needs an encoder (or set init: random)")
        return self


class DistillStudy(Part):
    dataset: str
    """Dataset the teachers are fine-tuned on and the students distilled on."""
    teachers: dict[str, TeacherSpec] = Field(min_length=1)
    """Teacher name -> teacher."""
    students: dict[str, StudentSpec] = Field(min_length=1)
    """Student name -> student."""
    pairs: Literal["all"] | list[tuple[str, str]] = "all"
    """``all`` (every teacher x every student) or a list of ``[teacher, student]`` names."""
    baseline: bool = True
    """Also train each student on labels only (distill.teacher="", label_weight=1) with the same steps: its baseline."""
    set: Overrides = {}
    """Config overrides for every distill run (and baseline) of this section."""
    teacher_set: Overrides = {}
    """Config overrides for every teacher fine-tune run."""


class WithinTarget(Part):
    dataset: str
    """Target dataset whose classes are subsampled."""
    num_classes: list[int] = Field(min_length=1)
    """Class counts k (each at least 2 and at most the dataset's class count)."""
    class_seeds: list[int] = Field([0], min_length=1)
    """One random k-class subset per class seed (several give the spread over which classes)."""

    @field_validator("num_classes")
    @classmethod
    def _k(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if v < 2]
        if bad:
            raise ValueError(f"every class count must be at least 2, got {bad}")
        return value


class TransferStudy(Part):
    encoders: list[str] = Field(min_length=1)
    """Source encoders."""
    protocols: list[Literal["linear", "full"]] = Field(["linear"], min_length=1)
    """Transfer protocols."""
    images_per_class: int = Field(0, ge=0)
    """Training images per class (0 = all), so class counts are compared at equal data per class."""
    within: list[WithinTarget] = []
    """Class-subset sweeps inside one dataset (class count without the dataset confound)."""
    across: list[str] = []
    """Whole target datasets (all classes), as the paper compared them."""
    set: Overrides = {}
    """Config overrides for every transfer run."""

    @model_validator(mode="after")
    def _something(self) -> "TransferStudy":
        if not self.within and not self.across:
            raise ValueError("transfer needs at least one of within or across")
        return self


class Study(Part):
    """A whole study file."""

    name: str
    """Study name: ``run.study`` of every run; runs go under ``<root>/<name>/``."""
    root: str = "runs"
    """Directory holding every study's runs (relative to the working directory, or absolute)."""
    data_root: str = ""
    """Replaces ``{data_root}`` in dataset sources (e.g. where CIFAR-10 lives on the cluster)."""
    seeds: list[int] = Field([0], min_length=1)
    """Seeds: each encoder is pretrained once per seed and every downstream run uses the encoder of its own seed."""
    defaults: Overrides = {}
    """Config overrides for every run of the study (nested sections or dotted keys)."""
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    """Dataset name -> source."""
    encoders: dict[str, EncoderSpec] = Field(min_length=1)
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
        if any(v < 0 for v in value):
            raise ValueError(f"seeds must be >= 0, got {value}")
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
        return Path(given) if given else Path(self.root) / self.name / "data" / dataset

    def encoder_base(self, encoder: str) -> str:
        """Base-model label of an encoder (explicit ``base`` or its backbone)."""
        spec = self.encoders[encoder]
        if spec.base:
            return spec.base
        model = _nest(self.defaults).get("model", {}) | _nest(spec.set).get("model", {})
        return str(model.get("backbone", "resnet18"))


def source_kind(source: str) -> tuple[str, str]:
    """``"cifar10:/data/c10"`` -> ``("cifar10", "/data/c10")``; ``"shapes"`` -> ``("shapes", "")``."""
    kind, _, arg = source.partition(":")
    return kind, arg


def index_num_classes(shards: Path) -> int | None:
    """Class count recorded in a shard directory's ``index.json``, or None when there is none (not built yet)."""
    path = Path(shards) / "index.json"
    if not path.is_file():
        return None
    try:
        index = read_json(path, "shard index")
    except FileError:
        return None
    if not isinstance(index, dict):
        return None
    if isinstance(index.get("num_classes"), int):
        return index["num_classes"]
    names = index.get("classes") or index.get("class_names")
    return len(names) if isinstance(names, list) else None


def source_num_classes(source: str) -> tuple[int | None, str | None]:
    """(class count of a source spec or None when it cannot be known without reading it, problem or None)."""
    kind, arg = source_kind(source)
    if kind not in SOURCE_KINDS:
        return None, f"unknown dataset source {source!r}; use one of: mnist5k, shapes:K, cifar10:ROOT, cifar100:ROOT, " \
                     "stl10:ROOT, imagefolder:DIR, npz:FILE"
    if kind == "shapes":
        if not arg:
            return SHAPES_DEFAULT_CLASSES, None
        fields = arg.split(":")
        if len(fields) > 4 or not all(re.fullmatch(r"\d+", f) for f in fields):
            return None, f"shapes:{arg}: use shapes[:K[:N_PER_CLASS[:SIZE[:SEED]]]] with integers, e.g. shapes:10:200:32"
        from simclr_hpc.data.generated import MAX_CLASSES  # numpy only, no torch

        if not 2 <= int(fields[0]) <= MAX_CLASSES:
            return None, f"shapes:{arg}: K must be an integer from 2 to {MAX_CLASSES}"
        return int(fields[0]), None
    if kind == "mnist5k":
        return (10, None) if not arg else (None, f"{source!r}: mnist5k takes no argument")
    if not arg:
        return None, f"{source!r}: {kind} needs a path, e.g. {kind}:/path/to/data"
    if kind in KNOWN_CLASS_COUNTS:
        return KNOWN_CLASS_COUNTS[kind], None
    path = Path(arg)
    if kind == "imagefolder" and path.is_dir():
        return sum(1 for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) or None, None
    return None, None


def _collect_schema_errors(err: ValidationError, source: str) -> list[str]:
    lines = []
    for line in format_errors(err, f"{source}: "):
        if "unknown key" in line:
            line = line.split(": unknown key")[0] + ": unknown key (check the spelling against configs/studies/demo.yaml)"
        lines.append(line)
    return lines


def check_semantics(study: Study, where: str) -> list[str]:
    """Every cross-reference and count problem of a schema-valid study, one line each."""
    problems: list[str] = []
    classes: dict[str, int | None] = {}
    for name, spec in study.datasets.items():
        count, problem = source_num_classes(study.source(name))
        if problem:
            problems.append(f"{where}: datasets.{name}.source: {problem}")
            classes[name] = None
            continue
        on_disk = index_num_classes(study.shards_dir(name))
        classes[name] = on_disk if on_disk is not None else count
        for key in _nest(spec.set):
            if key not in ("data", "model", "train", "optim"):
                problems.append(f"{where}: datasets.{name}.set: {key}.* cannot be set per dataset (only data, model, "
                                "train, optim)")

    def need_dataset(field: str, dataset: str) -> bool:
        if dataset not in study.datasets:
            known = ", ".join(study.datasets) or "none"
            problems.append(f"{where}: {field}: unknown dataset {dataset!r}; datasets of this study: {known}")
            return False
        return True

    def need_encoder(field: str, encoder: str) -> None:
        if encoder not in study.encoders:
            known = ", ".join(study.encoders) or "none"
            problems.append(f"{where}: {field}: unknown encoder {encoder!r}; encoders of this study: {known}")

    for name, enc in study.encoders.items():
        need_dataset(f"encoders.{name}.dataset", enc.dataset)

    if study.finetune:
        for i, enc in enumerate(study.finetune.encoders):
            need_encoder(f"finetune.encoders[{i}]", enc)
        if study.finetune.dataset:
            need_dataset("finetune.dataset", study.finetune.dataset)

    if study.distill:
        dist = study.distill
        need_dataset("distill.dataset", dist.dataset)
        for name in list(dist.teachers) + list(dist.students):
            try:
                check_safe_name(name, "name")
            except ValueError as exc:
                problems.append(f"{where}: distill: {exc}")
        for name, teacher in dist.teachers.items():
            need_encoder(f"distill.teachers.{name}.encoder", teacher.encoder)
        for name, student in dist.students.items():
            if student.encoder:
                need_encoder(f"distill.students.{name}.encoder", student.encoder)
        if dist.pairs != "all":
            seen = set()
            for i, (teacher, student) in enumerate(dist.pairs):
                if teacher not in dist.teachers:
                    known = ", ".join(dist.teachers)
                    problems.append(
                        f"{where}: distill.pairs[{i}]: teacher {teacher!r} is not produced by this study; "
                        f"add it under distill.teachers (teachers: {known})"
                    )
                if student not in dist.students:
                    known = ", ".join(dist.students)
                    problems.append(f"{where}: distill.pairs[{i}]: unknown student {student!r}; students: {known}")
                if (teacher, student) in seen:
                    problems.append(f"{where}: distill.pairs[{i}]: pair [{teacher}, {student}] is listed twice")
                seen.add((teacher, student))

    if study.transfer:
        tr = study.transfer
        for i, enc in enumerate(tr.encoders):
            need_encoder(f"transfer.encoders[{i}]", enc)
        for i, target in enumerate(tr.within):
            if not need_dataset(f"transfer.within[{i}].dataset", target.dataset):
                continue
            have = classes.get(target.dataset)
            if have is None:
                continue
            for k in target.num_classes:
                if k > have:
                    problems.append(
                        f"{where}: transfer.within[{i}].num_classes: k={k} is more than the {have} classes of dataset "
                        f"{target.dataset!r} ({study.source(target.dataset)}); use k <= {have}"
                    )
        for i, dataset in enumerate(tr.across):
            need_dataset(f"transfer.across[{i}]", dataset)

    for field_name, overrides in _override_fields(study):
        problems.extend(_check_overrides(overrides, f"{where}: {field_name}"))

    if not (study.finetune or study.distill or study.transfer):
        problems.append(f"{where}: the study has none of finetune, distill, transfer: nothing to study")
    return problems


def _override_fields(study: Study) -> list[tuple[str, dict]]:
    """(dotted study field, overrides) of every ``set`` in the study, to check each against the run config schema."""
    out = [("defaults", study.defaults), ("pretrain.set", study.pretrain.set)]
    out += [(f"datasets.{n}.set", d.set) for n, d in study.datasets.items()]
    out += [(f"encoders.{n}.set", e.set) for n, e in study.encoders.items()]
    if study.finetune:
        out.append(("finetune.set", study.finetune.set))
    if study.distill:
        out += [("distill.set", study.distill.set), ("distill.teacher_set", study.distill.teacher_set)]
        out += [(f"distill.teachers.{n}.set", t.set) for n, t in study.distill.teachers.items()]
        out += [(f"distill.students.{n}.set", s.set) for n, s in study.distill.students.items()]
    if study.transfer:
        out.append(("transfer.set", study.transfer.set))
    return [(name, value) for name, value in out if value]


def _check_overrides(overrides: dict, where: str) -> list[str]:
    """Problems of one override mapping on its own: unknown config keys, wrong types, impossible values."""
    from simclr_hpc.config import ConfigError, build_config

    try:
        build_config([_nest(overrides)], source=where)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            # Cross-field rules may need keys set elsewhere in the study; the expanded runs check those.
            return [line for line in exc.lines if not line.startswith(f"{where}: dist.")]
        return [f"{where}: {exc}"]
    return []


def parse_study(data: dict, where: str = "study") -> Study:
    """Validate a study mapping: schema and cross-references. Raises StudyError with one line per problem."""
    try:
        study = Study.model_validate(data)
    except ValidationError as err:
        raise StudyError(_collect_schema_errors(err, where)) from None
    problems = check_semantics(study, where)
    if problems:
        raise StudyError(problems)
    return study


def load_study(path: str | Path, check_configs: bool = True) -> Study:
    """Read and validate a study file; with ``check_configs`` also build every run's config (one line per problem)."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except UserError as err:
        raise StudyError(err.lines) from None
    study = parse_study(data, str(path))
    if check_configs:
        from simclr_hpc.study.plan import build_plan  # plan imports this module; a late import keeps one direction

        build_plan(study, where=str(path))
    return study


__all__ = [
    "SAFE_NAME",
    "Study",
    "StudyError",
    "DatasetSpec",
    "EncoderSpec",
    "FinetuneStudy",
    "DistillStudy",
    "TransferStudy",
    "TeacherSpec",
    "StudentSpec",
    "WithinTarget",
    "load_study",
    "parse_study",
    "source_num_classes",
    "index_num_classes",
]
