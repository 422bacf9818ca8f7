"""Checks of a whole study file across its sections, and ``load_study``: every problem one line of one StudyError.

A study names its datasets (a source spec each, shards built once), its SimCLR encoders (pretrain runs), and up to three
sections that expand into runs (schema: ``schema.py``; expansion: ``plan.py``):

``finetune``
    encoders x label fractions x projection-head layer x protocol x seeds.
``distill``
    teachers (fine-tune runs of study encoders) x students, each student also trained without a teacher as its own baseline.
``transfer``
    encoders x target datasets x class counts k (several random k-class subsets per k, a fixed number of images per class)
    x protocol x seeds, plus whole-dataset rows across datasets as the paper did.

``load_study(path)`` validates the file before anything runs: the schema (unknown keys, wrong types, bad values),
dataset sources (``data/source_spec.py``'s grammar), class counts, distill pairs, and every ``set`` on its own against
the run config schema. ``plan.load_plan(path)`` adds the expanded run configs (``simclr_hpc.config.build_config``).
Each problem is one line of a single :class:`StudyError`.

This module imports no torch: ``study submit --dry-run`` runs on a login node.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from simclr_hpc.config import Config, ConfigError, UserError, build_config, check_safe_name, format_errors, read_yaml
from simclr_hpc.data.index import index_num_classes
from simclr_hpc.data.source_spec import source_num_classes
from simclr_hpc.study.schema import Study, StudyError, nest_overrides

DATASET_SECTIONS = ("data", "model", "train", "optim")
"""Config sections a dataset's ``set`` may touch (the rest belong to a stage)."""


def _collect_schema_errors(err: ValidationError, source: str) -> list[str]:
    lines = []
    for line in format_errors(err, f"{source}: "):
        if "unknown key" in line:
            line = (
                line.split(": unknown key")[0] + ": unknown key (check the spelling against configs/studies/demo.yaml)"
            )
        lines.append(line)
    return lines


class _Checker:
    """Collects the problems of one study, one line each, in the order of the file's sections."""

    def __init__(self, study: Study, where: str):
        self.study = study
        self.where = where
        self.problems: list[str] = []
        self.classes: dict[str, int | None] = {}
        """Class count of each dataset whose source parses (from index.json when its shards exist)."""

    def add(self, field: str, text: str) -> None:
        self.problems.append(f"{self.where}: {field}: {text}")

    def need_dataset(self, field: str, dataset: str) -> bool:
        if dataset not in self.study.datasets:
            known = ", ".join(self.study.datasets) or "none"
            self.add(field, f"unknown dataset {dataset!r}; datasets of this study: {known}")
            return False
        return True

    def need_classes(self, field: str, dataset: str) -> None:
        """A labelled dataset of a downstream section needs two classes or more (one class is always right)."""
        have = self.classes.get(dataset)
        if have is not None and have < 2:
            self.add(field, f"dataset {dataset!r} has {have} class; a classifier needs at least 2: use another dataset")

    def need_encoder(self, field: str, encoder: str) -> None:
        if encoder not in self.study.encoders:
            known = ", ".join(self.study.encoders) or "none"
            self.add(field, f"unknown encoder {encoder!r}; encoders of this study: {known}")

    def datasets(self) -> None:
        for name, spec in self.study.datasets.items():
            count, problem = source_num_classes(self.study.source(name))
            if problem:
                self.add(f"datasets.{name}.source", problem)
                self.classes[name] = None
                continue
            on_disk = index_num_classes(self.study.shards_dir(name))
            self.classes[name] = on_disk if on_disk is not None else count
            for key in nest_overrides(spec.set):
                if key not in DATASET_SECTIONS:
                    self.add(
                        f"datasets.{name}.set",
                        f"{key}.* cannot be set per dataset (only {', '.join(DATASET_SECTIONS)})",
                    )
        owners: dict[Path, str] = {}
        for name in self.study.datasets:  # one dataset per shard directory: a second would be built over the first
            where = Path(os.path.abspath(self.study.shards_dir(name)))
            if where in owners:
                self.add(
                    f"datasets.{name}.shards",
                    f"{where} is also dataset {owners[where]}'s shard directory; give "
                    "each dataset its own (or leave shards empty for <root>/<study>/data/<dataset>)",
                )
            owners.setdefault(where, name)
        for name, enc in self.study.encoders.items():
            self.need_dataset(f"encoders.{name}.dataset", enc.dataset)

    def finetune(self) -> None:
        ft = self.study.finetune
        for i, enc in enumerate(ft.encoders):
            self.need_encoder(f"finetune.encoders[{i}]", enc)
        if ft.dataset and self.need_dataset("finetune.dataset", ft.dataset):
            self.need_classes("finetune.dataset", ft.dataset)
        for enc in [] if ft.dataset else ft.encoders:
            if enc in self.study.encoders:
                self.need_classes(f"finetune (encoder {enc}'s dataset)", self.study.encoders[enc].dataset)
        primary = ft.primary
        if primary.protocol and primary.protocol not in ft.protocols:
            self.add(
                "finetune.primary.protocol",
                f"{primary.protocol} is not among finetune.protocols "
                f"({', '.join(ft.protocols)}); add it there or pick one of them",
            )
        for bad in sorted(set(ft.full_label_fractions or []) - set(ft.label_fractions)):
            self.add(
                "finetune.full_label_fractions", f"{bad} is not among finetune.label_fractions {ft.label_fractions}"
            )
        protocol = primary.protocol or ("full" if "full" in ft.protocols else ft.protocols[0])
        if primary.label_fraction is not None and primary.label_fraction not in ft.fractions(protocol):
            self.add(
                "finetune.primary.label_fraction",
                f"{primary.label_fraction} is not among the label fractions "
                f"fine-tuned under {protocol} {ft.fractions(protocol)}",
            )
        if len(ft.head_layers) > 1 and not {0, primary.head_layer} <= set(ft.head_layers):
            self.add(
                "finetune.primary.head_layer",
                f"the contrast needs head layers 0 and {primary.head_layer} in "
                f"finetune.head_layers (has {ft.head_layers})",
            )

    def distill(self) -> None:
        dist = self.study.distill
        if self.need_dataset("distill.dataset", dist.dataset):
            self.need_classes("distill.dataset", dist.dataset)
        for name in list(dist.teachers) + list(dist.students):
            try:
                check_safe_name(name, "name")
            except ValueError as exc:
                self.add("distill", str(exc))
        for name, teacher in dist.teachers.items():
            self.need_encoder(f"distill.teachers.{name}.encoder", teacher.encoder)
        for name, student in dist.students.items():
            if student.encoder:
                self.need_encoder(f"distill.students.{name}.encoder", student.encoder)
        if dist.pairs != "all":
            self.pairs()
        fraction = dist.primary.label_fraction
        if fraction is not None and fraction not in dist.label_fractions:
            self.add(
                "distill.primary.label_fraction",
                f"{fraction} is not among distill.label_fractions {dist.label_fractions}",
            )

    def pairs(self) -> None:
        dist = self.study.distill
        seen = set()
        for i, (teacher, student) in enumerate(dist.pairs):
            if teacher not in dist.teachers:
                self.add(
                    f"distill.pairs[{i}]",
                    f"teacher {teacher!r} is not produced by this study; add it under "
                    f"distill.teachers (teachers: {', '.join(dist.teachers)})",
                )
            if student not in dist.students:
                self.add(f"distill.pairs[{i}]", f"unknown student {student!r}; students: {', '.join(dist.students)}")
            if (teacher, student) in seen:
                self.add(f"distill.pairs[{i}]", f"pair [{teacher}, {student}] is listed twice")
            seen.add((teacher, student))

    def transfer(self) -> None:
        tr = self.study.transfer
        for i, enc in enumerate(tr.encoders):
            self.need_encoder(f"transfer.encoders[{i}]", enc)
        for i, target in enumerate(tr.within):
            if not self.need_dataset(f"transfer.within[{i}].dataset", target.dataset):
                continue
            have = self.classes.get(target.dataset)
            for k in target.num_classes if have is not None else []:
                if k > have:
                    self.add(
                        f"transfer.within[{i}].num_classes",
                        f"k={k} is more than the {have} classes of dataset {target.dataset!r} "
                        f"({self.study.source(target.dataset)}); use k <= {have}",
                    )
        for i, dataset in enumerate(tr.across):
            if self.need_dataset(f"transfer.across[{i}]", dataset):
                self.need_classes(f"transfer.across[{i}]", dataset)
            whole = [t for t in tr.within if t.dataset == dataset and self.classes.get(dataset) in t.num_classes]
            if whole:
                self.add(
                    f"transfer.across[{i}]",
                    f"{dataset} with all {self.classes[dataset]} classes is already a "
                    "transfer.within target (k = all classes); count it once: drop it "
                    "from across or that k from within",
                )
        within = [t.dataset for t in tr.within]
        if tr.primary.dataset and tr.primary.dataset not in within:
            self.add(
                "transfer.primary.dataset",
                f"{tr.primary.dataset!r} is not a transfer.within dataset ({', '.join(within) or 'none'})",
            )
        if tr.primary.protocol and tr.primary.protocol not in tr.protocols:
            self.add(
                "transfer.primary.protocol",
                f"{tr.primary.protocol} is not among transfer.protocols ({', '.join(tr.protocols)})",
            )


def check_semantics(study: Study, where: str) -> list[str]:
    """Every cross-reference and count problem of a schema-valid study, one line each."""
    check = _Checker(study, where)
    check.datasets()
    for section in ("finetune", "distill", "transfer"):
        if getattr(study, section):
            getattr(check, section)()
    for field_name, overrides in _override_fields(study):
        check.problems.extend(_check_overrides(overrides, f"{where}: {field_name}"))
    if not (study.finetune or study.distill or study.transfer):
        check.problems.append(f"{where}: the study has none of finetune, distill, transfer: nothing to study")
    return check.problems


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
    try:
        build_config([nest_overrides(overrides)], source=where)
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


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (schema and cross-references; ``plan.load_plan`` also builds every run config)."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except UserError as err:
        raise StudyError(err.lines) from None
    sections = set(data) & set(Config.model_fields)
    if sections and not {"name", "datasets", "encoders"} & set(data):
        raise StudyError(
            f"{path}: a run config (sections {', '.join(sorted(sections))}), not a study file; run it "
            f"with `simclr-hpc run STAGE -c {path}`, or write a study (configs/studies/demo.yaml)"
        )
    return parse_study(data, str(path))
