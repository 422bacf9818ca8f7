"""Expand a study into a graph of runs: each a (stage, Config, depends_on) with a deterministic, readable, safe name.

Names (``<root>/<study>/<stage>/<name>``), one per seed ``s``:

=========  ====================================================  ==========================================
stage      name                                                  depends on
=========  ====================================================  ==========================================
pretrain   ``<encoder>-s<s>``                                    -
finetune   ``<encoder>-lf<fraction>-h<layer>-<protocol>-s<s>``   its encoder's pretrain run
finetune   ``teacher-<teacher>-s<s>`` (a distillation teacher)    its encoder's pretrain run
distill    ``<teacher>-to-<student>-s<s>``                       the teacher run, the student's pretrain run
distill    ``baseline-<student>-s<s>`` (labels only)             the student's pretrain run (if pretrained)
transfer   ``<encoder>-<dataset>-k<k>-c<class seed>-<protocol>-s<s>``, ``<encoder>-<dataset>-all-<protocol>-s<s>``
=========  ====================================================  ==========================================

Every downstream run of seed ``s`` uses the encoder pretrained with seed ``s``, so seeds are independent replicates of the
whole pipeline and a confidence interval over seeds covers pretraining noise too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from simclr_hpc.config import Config, ConfigError, build_config, check_safe_name
from simclr_hpc.recipes import stage_recipe
from simclr_hpc.study.spec import Study, StudyError, _nest, index_num_classes, source_num_classes

# Submission order: an array of a later wave only depends on runs of earlier waves.
WAVES = (("pretrain",), ("finetune", "transfer"), ("distill",))
MODEL_KEYS = ("backbone", "cifar_stem", "width", "proj_layers", "proj_hidden_dim", "proj_dim")


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: what to run, with which config, after which runs, and what it means in the study."""

    stage: str
    name: str
    cfg: Config
    depends_on: tuple[str, ...] = ()
    """Keys (``stage/name``) of the runs that must finish first."""
    labels: dict = field(default_factory=dict, hash=False, compare=False)
    """Study coordinates of the run (section, encoder, seed, label_fraction, teacher, student, k, ...), for the report."""

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.name}"

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir(self.stage)

    @property
    def result_path(self) -> Path:
        return self.run_dir / "result.json"


@dataclass
class DatasetJob:
    """A dataset the study needs: its source spec and the shard directory to build if it has no index.json."""

    name: str
    source: str
    shards: Path
    val_fraction: float


@dataclass
class Plan:
    """Every run of a study in dependency order, plus the datasets to build first."""

    study: Study
    runs: list[RunSpec]
    datasets: list[DatasetJob]

    def __post_init__(self) -> None:
        self._by_key = {run.key: run for run in self.runs}

    def get(self, key: str) -> RunSpec:
        return self._by_key[key]

    def stage(self, stage: str) -> list[RunSpec]:
        return [run for run in self.runs if run.stage == stage]

    def waves(self) -> list[list[RunSpec]]:
        """Runs grouped so that each group only depends on earlier groups (one array per stage within a group)."""
        out = []
        for stages in WAVES:
            wave = [run for run in self.runs if run.stage in stages]
            if wave:
                out.append(wave)
        return out

    @property
    def study_dir(self) -> Path:
        return Path(self.study.root) / self.study.name


def fmt_number(value: float) -> str:
    """0.01 -> "0.01", 1.0 -> "1", 0.5 -> "0.5": short, exact and safe in a path."""
    return f"{value:g}".replace("+", "")


def safe_run_name(*parts: object) -> str:
    """Join parts with '-' into a safe name; a name over 100 characters keeps a readable prefix and a content hash."""
    name = "-".join(str(p) for p in parts)
    if len(name) > 100:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:89]}-{digest}"
    return check_safe_name(name, "run name")


class _Builder:
    def __init__(self, study: Study, where: str):
        self.study = study
        self.where = where
        self.problems: list[str] = []
        self._seen_problem: set[str] = set()
        self.runs: list[RunSpec] = []
        self._keys: set[str] = set()

    def nest(self, overrides: dict, field_name: str) -> dict:
        try:
            return _nest(overrides)
        except ValueError as exc:
            self.problem(f"{self.where}: {field_name}: {exc}")
            return {}

    def problem(self, line: str) -> None:
        if line not in self._seen_problem:
            self._seen_problem.add(line)
            self.problems.append(line)

    def dataset_layer(self, dataset: str) -> dict:
        spec = self.study.datasets[dataset]
        return {**self.nest(spec.set, f"datasets.{dataset}.set")}

    def encoder_model(self, encoder: str) -> dict:
        """``model.*`` of an encoder's pretrain run: every run that loads the encoder needs the same architecture."""
        layers = [self.nest(self.study.defaults, "defaults"), self.nest(self.study.pretrain.set, "pretrain.set"),
                  self.dataset_layer(self.study.encoders[encoder].dataset),
                  self.nest(self.study.encoders[encoder].set, f"encoders.{encoder}.set")]
        model: dict = {}
        for layer in layers:
            model.update({k: v for k, v in layer.get("model", {}).items() if k in MODEL_KEYS})
        return {"model": model} if model else {}

    def add(self, stage: str, name: str, dataset: str, layers: list[dict], forced: dict, depends_on: tuple[str, ...],
            labels: dict) -> RunSpec | None:
        try:
            name = safe_run_name(name)
        except ValueError as exc:
            self.problem(f"{self.where}: {labels.get('section', stage)}: {exc}")
            return None
        key = f"{stage}/{name}"
        if key in self._keys:
            self.problem(f"{self.where}: two runs of the study are both named {key}; rename a teacher, student or encoder")
            return None
        study = self.study
        wiring = {
            "run": {"name": name, "study": study.name, "root": study.root, "seed": labels["seed"]},
            "data": {"shards": str(study.shards_dir(dataset))},
        }
        all_layers = [self.nest(study.defaults, "defaults"), self.dataset_layer(dataset), *layers, forced, wiring]
        try:
            cfg = build_config([stage_recipe(stage, all_layers), *all_layers])  # the stage's recipe under the study
        except ConfigError as err:
            for line in err.lines:
                self.problem(f"{self.where}: {labels.get('section', stage)} run config ({key}): {line}")
            return None
        run = RunSpec(stage, name, cfg, depends_on, {**labels, "dataset": dataset})
        self._keys.add(key)
        self.runs.append(run)
        return run

    def pretrain_key(self, encoder: str, seed: int) -> str:
        return f"pretrain/{safe_run_name(encoder, f's{seed}')}"

    def pretrain_dir(self, encoder: str, seed: int) -> str:
        return str(Path(self.study.root) / self.study.name / self.pretrain_key(encoder, seed))


def build_plan(study: Study, where: str = "study") -> Plan:
    """Expand a validated study into its runs; a run config that does not validate is a StudyError line."""
    b = _Builder(study, where)
    seeds = study.seeds

    for seed in seeds:
        for enc, spec in study.encoders.items():
            b.add("pretrain", f"{enc}-s{seed}", spec.dataset,
                  [b.nest(study.pretrain.set, "pretrain.set"), b.nest(spec.set, f"encoders.{enc}.set")], {}, (),
                  {"section": "pretrain", "encoder": enc, "base": study.encoder_base(enc), "seed": seed})

    if study.finetune:
        ft = study.finetune
        section = b.nest(ft.set, "finetune.set")
        for seed in seeds:
            for enc in ft.encoders:
                dataset = ft.dataset or study.encoders[enc].dataset
                for protocol in ft.protocols:
                    for fraction in ft.label_fractions:
                        for layer in ft.head_layers:
                            forced = {"finetune": {"encoder": b.pretrain_dir(enc, seed), "label_fraction": fraction,
                                                   "from_head_layer": layer, "protocol": protocol}}
                            b.add("finetune", f"{enc}-lf{fmt_number(fraction)}-h{layer}-{protocol}-s{seed}", dataset,
                                  [b.encoder_model(enc), section], forced, (b.pretrain_key(enc, seed),),
                                  {"section": "finetune", "encoder": enc, "base": study.encoder_base(enc),
                                   "seed": seed, "label_fraction": fraction, "head_layer": layer,
                                   "protocol": protocol})

    if study.distill:
        dist = study.distill
        section = b.nest(dist.set, "distill.set")
        teacher_section = b.nest(dist.teacher_set, "distill.teacher_set")
        pairs = ([(t, s) for t in dist.teachers for s in dist.students] if dist.pairs == "all"
                 else [tuple(p) for p in dist.pairs])
        student_base = {}
        for sname, student in dist.students.items():
            if student.base:
                student_base[sname] = student.base
            elif student.encoder:
                student_base[sname] = study.encoder_base(student.encoder)
            else:
                model = _nest(study.defaults).get("model", {}) | b.nest(student.set, "").get("model", {})
                student_base[sname] = str(model.get("backbone", "resnet18"))
        for seed in seeds:
            teacher_keys = {}
            for tname, teacher in dist.teachers.items():
                forced = {"finetune": {"encoder": b.pretrain_dir(teacher.encoder, seed),
                                       "label_fraction": teacher.label_fraction, "from_head_layer": teacher.head_layer,
                                       "protocol": teacher.protocol}}
                run = b.add("finetune", f"teacher-{tname}-s{seed}", dist.dataset,
                            [b.encoder_model(teacher.encoder), teacher_section,
                             b.nest(teacher.set, f"distill.teachers.{tname}.set")], forced,
                            (b.pretrain_key(teacher.encoder, seed),),
                            {"section": "teacher", "teacher": tname, "encoder": teacher.encoder,
                             "teacher_base": study.encoder_base(teacher.encoder), "seed": seed,
                             "label_fraction": teacher.label_fraction, "protocol": teacher.protocol,
                             "head_layer": teacher.head_layer})
                if run:
                    teacher_keys[tname] = run
            student_layers = {}
            for sname, student in dist.students.items():
                layers = [b.encoder_model(student.encoder) if student.encoder else {}, section,
                          b.nest(student.set, f"distill.students.{sname}.set")]
                init = b.pretrain_dir(student.encoder, seed) if student.init == "pretrained" else ""
                deps = (b.pretrain_key(student.encoder, seed),) if init else ()
                student_layers[sname] = (layers, init, deps)
                if dist.baseline:
                    forced = {"distill": {"teacher": "", "student_init": init, "label_weight": 1.0}}
                    b.add("distill", f"baseline-{sname}-s{seed}", dist.dataset, layers, forced, deps,
                          {"section": "baseline", "student": sname, "student_base": student_base[sname],
                           "seed": seed})
            for tname, sname in pairs:
                teacher = teacher_keys.get(tname)
                if teacher is None or sname not in student_layers:
                    continue
                layers, init, deps = student_layers[sname]
                forced = {"distill": {"teacher": str(teacher.run_dir), "student_init": init}}
                tbase = study.encoder_base(dist.teachers[tname].encoder)
                b.add("distill", f"{tname}-to-{sname}-s{seed}", dist.dataset, layers, forced, (teacher.key, *deps),
                      {"section": "distill", "teacher": tname, "student": sname, "teacher_base": tbase,
                       "student_base": student_base[sname], "same_base": tbase == student_base[sname],
                       "seed": seed})

    if study.transfer:
        tr = study.transfer
        section = b.nest(tr.set, "transfer.set")
        for seed in seeds:
            for enc in tr.encoders:
                common = [b.encoder_model(enc), section]
                deps = (b.pretrain_key(enc, seed),)
                for protocol in tr.protocols:
                    for target in tr.within:
                        for k in target.num_classes:
                            for class_seed in target.class_seeds:
                                forced = {"transfer": {"encoder": b.pretrain_dir(enc, seed), "num_classes": k,
                                                       "class_seed": class_seed,
                                                       "images_per_class": tr.images_per_class, "protocol": protocol}}
                                b.add("transfer", f"{enc}-{target.dataset}-k{k}-c{class_seed}-{protocol}-s{seed}",
                                      target.dataset, common, forced, deps,
                                      {"section": "transfer", "kind": "within", "encoder": enc, "seed": seed,
                                       "k": k, "class_seed": class_seed, "protocol": protocol})
                    for dataset in tr.across:
                        k_all = index_num_classes(study.shards_dir(dataset)) or source_num_classes(study.source(dataset))[0]
                        forced = {"transfer": {"encoder": b.pretrain_dir(enc, seed), "num_classes": 0,
                                               "images_per_class": tr.images_per_class, "protocol": protocol}}
                        b.add("transfer", f"{enc}-{dataset}-all-{protocol}-s{seed}", dataset, common, forced, deps,
                              {"section": "transfer", "kind": "across", "encoder": enc, "seed": seed,
                               "k": k_all, "class_seed": None, "protocol": protocol})

    if b.problems:
        raise StudyError(b.problems)
    datasets = [DatasetJob(name, study.source(name), study.shards_dir(name), spec.val_fraction)
                for name, spec in study.datasets.items()]
    keys = {run.key for run in b.runs}
    dangling = [f"{where}: run {run.key} depends on {dep}, which the study does not produce"
                for run in b.runs for dep in run.depends_on if dep not in keys]
    if dangling:
        raise StudyError(dangling)
    order = {stage: i for i, stages in enumerate(WAVES) for stage in stages}
    runs = sorted(b.runs, key=lambda run: order[run.stage])  # stable: keeps the readable expansion order per wave
    return Plan(study, runs, datasets)


def load_plan(path: str | Path) -> Plan:
    """Read, validate and expand a study file."""
    from simclr_hpc.study.spec import load_study

    study = load_study(path, check_configs=False)
    return build_plan(study, where=str(path))
