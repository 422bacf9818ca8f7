"""Expand a study into a graph of runs: each a (stage, Config, depends_on) with a deterministic, readable, safe name.

One expander per study section (``pretrain_runs``, ``finetune_runs``, ``distill_runs``, ``transfer_runs``), each a
product over the section's axes; the result is a ``runs.Plan``.

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

from itertools import product
from pathlib import Path

from simclr_hpc.config import ConfigError, build_config
from simclr_hpc.data.index import index_num_classes
from simclr_hpc.data.source_spec import source_num_classes
from simclr_hpc.study.schema import Study, StudyError, nest_overrides
from simclr_hpc.study.runs import WAVES, DatasetJob, Plan, RunSpec, fmt_number, safe_run_name
from simclr_hpc.study.spec import load_study

MODEL_KEYS = ("backbone", "cifar_stem", "width", "proj_layers", "proj_hidden_dim", "proj_dim")
"""``model.*`` keys of an encoder that every run loading it must share."""


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
            return nest_overrides(overrides)
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
            cfg = build_config(all_layers)
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


def pretrain_runs(b: _Builder) -> None:
    """One SimCLR run per (seed, encoder)."""
    study = b.study
    stage_set = b.nest(study.pretrain.set, "pretrain.set")
    for seed, (enc, spec) in product(study.seeds, study.encoders.items()):
        b.add("pretrain", f"{enc}-s{seed}", spec.dataset, [stage_set, b.nest(spec.set, f"encoders.{enc}.set")], {}, (),
              {"section": "pretrain", "encoder": enc, "base": study.encoder_base(enc), "seed": seed})


def finetune_runs(b: _Builder) -> None:
    """seeds x encoders x protocols x label fractions x head layers, each on its encoder's pretrain run of its seed."""
    study, ft = b.study, b.study.finetune
    section = b.nest(ft.set, "finetune.set")
    for seed, enc, protocol, fraction, layer in product(study.seeds, ft.encoders, ft.protocols, ft.label_fractions,
                                                        ft.head_layers):
        forced = {"finetune": {"encoder": b.pretrain_dir(enc, seed), "label_fraction": fraction,
                               "from_head_layer": layer, "protocol": protocol}}
        b.add("finetune", f"{enc}-lf{fmt_number(fraction)}-h{layer}-{protocol}-s{seed}",
              ft.dataset or study.encoders[enc].dataset, [b.encoder_model(enc), section], forced,
              (b.pretrain_key(enc, seed),),
              {"section": "finetune", "encoder": enc, "base": study.encoder_base(enc), "seed": seed,
               "label_fraction": fraction, "head_layer": layer, "protocol": protocol})


def _student_base(b: _Builder, student) -> str:
    """Base-model label of a distillation student: explicit, its encoder's, or the backbone its overrides give."""
    if student.base:
        return student.base
    if student.encoder:
        return b.study.encoder_base(student.encoder)
    model = nest_overrides(b.study.defaults).get("model", {}) | b.nest(student.set, "").get("model", {})
    return str(model.get("backbone", "resnet18"))


def _teacher_runs(b: _Builder, seed: int) -> dict[str, RunSpec]:
    """The fine-tune run of every teacher for ``seed`` (name -> run; a teacher whose config failed is absent)."""
    dist = b.study.distill
    teacher_section = b.nest(dist.teacher_set, "distill.teacher_set")
    runs = {}
    for tname, teacher in dist.teachers.items():
        forced = {"finetune": {"encoder": b.pretrain_dir(teacher.encoder, seed), "label_fraction": teacher.label_fraction,
                               "from_head_layer": teacher.head_layer, "protocol": teacher.protocol}}
        run = b.add("finetune", f"teacher-{tname}-s{seed}", dist.dataset,
                    [b.encoder_model(teacher.encoder), teacher_section,
                     b.nest(teacher.set, f"distill.teachers.{tname}.set")], forced,
                    (b.pretrain_key(teacher.encoder, seed),),
                    {"section": "teacher", "teacher": tname, "encoder": teacher.encoder,
                     "teacher_base": b.study.encoder_base(teacher.encoder), "seed": seed,
                     "label_fraction": teacher.label_fraction, "protocol": teacher.protocol,
                     "head_layer": teacher.head_layer})
        if run:
            runs[tname] = run
    return runs


def distill_runs(b: _Builder) -> None:
    """Per seed: every teacher's fine-tune run, every student's labels-only baseline, every (teacher, student) pair."""
    study, dist = b.study, b.study.distill
    section = b.nest(dist.set, "distill.set")
    pairs = list(product(dist.teachers, dist.students)) if dist.pairs == "all" else [tuple(p) for p in dist.pairs]
    student_base = {sname: _student_base(b, student) for sname, student in dist.students.items()}
    for seed in study.seeds:
        teachers = _teacher_runs(b, seed)
        students = {}
        for sname, student in dist.students.items():
            layers = [b.encoder_model(student.encoder) if student.encoder else {}, section,
                      b.nest(student.set, f"distill.students.{sname}.set")]
            init = b.pretrain_dir(student.encoder, seed) if student.init == "pretrained" else ""
            deps = (b.pretrain_key(student.encoder, seed),) if init else ()
            students[sname] = (layers, init, deps)
            if dist.baseline:
                forced = {"distill": {"teacher": "", "student_init": init, "label_weight": 1.0}}
                b.add("distill", f"baseline-{sname}-s{seed}", dist.dataset, layers, forced, deps,
                      {"section": "baseline", "student": sname, "student_base": student_base[sname], "seed": seed})
        for tname, sname in pairs:
            teacher = teachers.get(tname)
            if teacher is None or sname not in students:
                continue
            layers, init, deps = students[sname]
            forced = {"distill": {"teacher": str(teacher.run_dir), "student_init": init}}
            tbase = study.encoder_base(dist.teachers[tname].encoder)
            b.add("distill", f"{tname}-to-{sname}-s{seed}", dist.dataset, layers, forced, (teacher.key, *deps),
                  {"section": "distill", "teacher": tname, "student": sname, "teacher_base": tbase,
                   "student_base": student_base[sname], "same_base": tbase == student_base[sname], "seed": seed})


def transfer_runs(b: _Builder) -> None:
    """seeds x encoders x protocols x (within: targets x k x class seeds, then across: whole datasets)."""
    study, tr = b.study, b.study.transfer
    section = b.nest(tr.set, "transfer.set")
    for seed, enc, protocol in product(study.seeds, tr.encoders, tr.protocols):
        common, deps = [b.encoder_model(enc), section], (b.pretrain_key(enc, seed),)
        labels = {"section": "transfer", "encoder": enc, "seed": seed, "protocol": protocol}
        forced = {"encoder": b.pretrain_dir(enc, seed), "images_per_class": tr.images_per_class, "protocol": protocol}
        for target in tr.within:
            for k, class_seed in product(target.num_classes, target.class_seeds):
                b.add("transfer", f"{enc}-{target.dataset}-k{k}-c{class_seed}-{protocol}-s{seed}", target.dataset,
                      common, {"transfer": {**forced, "num_classes": k, "class_seed": class_seed}}, deps,
                      {**labels, "kind": "within", "k": k, "class_seed": class_seed})
        for dataset in tr.across:
            k_all = index_num_classes(study.shards_dir(dataset)) or source_num_classes(study.source(dataset))[0]
            b.add("transfer", f"{enc}-{dataset}-all-{protocol}-s{seed}", dataset, common,
                  {"transfer": {**forced, "num_classes": 0}}, deps,
                  {**labels, "kind": "across", "k": k_all, "class_seed": None})


SECTIONS = (("pretrain", pretrain_runs), ("finetune", finetune_runs), ("distill", distill_runs),
            ("transfer", transfer_runs))
"""Study section -> its expander, in expansion order (the readable order of runs within a wave)."""


def build_plan(study: Study, where: str = "study") -> Plan:
    """Expand a validated study into its runs; a run config that does not validate is a StudyError line."""
    b = _Builder(study, where)
    for section, expand in SECTIONS:
        if section == "pretrain" or getattr(study, section):
            expand(b)
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
    """Read, validate and expand a study file: every schema, reference and run-config problem, one line each."""
    return build_plan(load_study(path), where=str(path))
