"""Expand a study into a graph of runs: each a (stage, Config, depends_on) with a deterministic, readable, safe name.

One expander per study section (``pretrain_runs``, ``finetune_runs``, ``distill_runs``, ``transfer_runs``), each a
product over the section's axes; the result is a ``runs.Plan``.

Names (``<root>/<study>/<stage>/<name>``), one per seed ``s`` (``lf``: label fraction, ``d``: subset draw):

=========  ========================================================  ==========================================
stage      name                                                      depends on
=========  ========================================================  ==========================================
pretrain   ``<encoder>-s<s>``                                        -
pretrain   ``<encoder>-student-s<s>`` (a pretrained distillation     -
           student's encoder, pretrained with seed 1000 + s)
finetune   ``<encoder>-lf<fraction>-h<layer>-<protocol>-s<s>``       its encoder's pretrain run
finetune   ``teacher-<teacher>-lf<fraction>-s<s>`` (a teacher)        its encoder's pretrain run
distill    ``<teacher>-to-<student>-lf<fraction>-s<s>``              the teacher run (and the student's encoder)
distill    ``baseline-<student>-lf<fraction>-s<s>`` (labels only)    (the student's encoder, if pretrained)
transfer   ``<encoder>-<dataset>-k<k>-d<draw>-<protocol>-s<s>``, ``<encoder>-<dataset>-all-<protocol>-s<s>``
=========  ========================================================  ==========================================

Baselines (``finetune.baselines`` / ``transfer.baselines``, both by default), with the seeds, protocols and splits of
the runs they are compared with and no dependency: ``random-<encoder>-...`` (a random-init encoder of that encoder's
architecture, one per distinct architecture, named after its first encoder; under ``full``: trained from scratch) and
``pixels-<dataset>-...`` (a linear classifier on raw pixels, one per split), e.g. ``finetune/random-r18-lf0.1-h0-
linear-s0``, ``finetune/pixels-mnist-lf0.1-linear-s0``, ``transfer/pixels-shapes20-k5-d0-linear-s0``.

Every downstream run of seed ``s`` uses the encoder pretrained with seed ``s``, so seeds are independent replicates of the
whole pipeline and a confidence interval over seeds covers pretraining noise too. A distillation student never starts
from the weights its teacher was fine-tuned from: it is random-init (SimCLRv2's students) or starts from its encoder
pretrained under seed 1000 + s, a run of its own that no other seed shares.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

from simclr_hpc import rundir
from simclr_hpc.data.index import index_num_classes
from simclr_hpc.data.source_spec import source_num_classes
from simclr_hpc.study.builder import PlanBuilder, finetune_baselines, transfer_baselines
from simclr_hpc.study.runs import WAVES, DatasetJob, Plan, RunSpec, fmt_number
from simclr_hpc.study.schema import STUDENT_SEED_OFFSET, Study, StudyError, nest_overrides
from simclr_hpc.study.spec import load_study


def pretrain_runs(b: PlanBuilder) -> None:
    """One SimCLR run per (seed, encoder)."""
    study = b.study
    stage_set = b.nest(study.pretrain.set, "pretrain.set")
    for seed, (enc, spec) in product(study.seeds, study.encoders.items()):
        b.add(
            "pretrain",
            f"{enc}-s{seed}",
            spec.dataset,
            [stage_set, b.nest(spec.set, f"encoders.{enc}.set")],
            {},
            (),
            {"section": "pretrain", "encoder": enc, "base": study.encoder_base(enc), "seed": seed},
        )


def finetune_runs(b: PlanBuilder) -> None:
    """seeds x encoders x protocols x label fractions x head layers, each on its encoder's pretrain run of its seed."""
    study, ft = b.study, b.study.finetune
    section = b.nest(ft.set, "finetune.set")
    cells = [(p, f, layer) for p in ft.protocols for f in ft.fractions(p) for layer in ft.head_layers]
    for seed, enc, (protocol, fraction, layer) in product(study.seeds, ft.encoders, cells):
        forced = {
            "finetune": {
                "encoder": b.pretrain_dir(enc, seed),
                "label_fraction": fraction,
                "from_head_layer": layer,
                "protocol": protocol,
            }
        }
        b.add(
            "finetune",
            f"{enc}-lf{fmt_number(fraction)}-h{layer}-{protocol}-s{seed}",
            ft.dataset or study.encoders[enc].dataset,
            [b.encoder_model(enc), section],
            forced,
            (b.pretrain_key(enc, seed),),
            {
                "section": "finetune",
                "encoder": enc,
                "base": study.encoder_base(enc),
                "seed": seed,
                "label_fraction": fraction,
                "head_layer": layer,
                "protocol": protocol,
                "arch": b.arch(enc),
            },
        )
    finetune_baselines(b)


def _student_base(b: PlanBuilder, student) -> str:
    """Base-model label of a distillation student: explicit, its encoder's, or the backbone its overrides give."""
    if student.base:
        return student.base
    if student.encoder:
        return b.study.encoder_base(student.encoder)
    model = nest_overrides(b.study.defaults).get("model", {}) | b.nest(student.set, "").get("model", {})
    return str(model.get("backbone", "resnet18"))


def _teacher_runs(b: PlanBuilder, seed: int, fraction: float) -> dict[str, RunSpec]:
    """The fine-tune run of every teacher on ``fraction`` of the labels for ``seed`` (name -> run; a teacher whose
    config failed is absent). The labelled subset is the one its students' baselines get (same fraction and seed)."""
    dist = b.study.distill
    teacher_section = b.nest(dist.teacher_set, "distill.teacher_set")
    runs = {}
    for tname, teacher in dist.teachers.items():
        forced = {
            "finetune": {
                "encoder": b.pretrain_dir(teacher.encoder, seed),
                "label_fraction": fraction,
                "from_head_layer": teacher.head_layer,
                "protocol": teacher.protocol,
            }
        }
        run = b.add(
            "finetune",
            f"teacher-{tname}-lf{fmt_number(fraction)}-s{seed}",
            dist.dataset,
            [b.encoder_model(teacher.encoder), teacher_section, b.nest(teacher.set, f"distill.teachers.{tname}.set")],
            forced,
            (b.pretrain_key(teacher.encoder, seed),),
            {
                "section": "teacher",
                "teacher": tname,
                "encoder": teacher.encoder,
                "teacher_base": b.study.encoder_base(teacher.encoder),
                "seed": seed,
                "label_fraction": fraction,
                "protocol": teacher.protocol,
                "head_layer": teacher.head_layer,
            },
        )
        if run:
            runs[tname] = run
    return runs


def _student_inits(b: PlanBuilder, seed: int) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Student name -> (``distill.student_init``, its dependencies) for ``seed``: empty for a random student; for a
    pretrained one, its encoder pretrained under seed ``STUDENT_SEED_OFFSET + seed`` (planned here, once), never the
    run its teachers were fine-tuned from."""
    study, out = b.study, {}
    for sname, student in study.distill.students.items():
        if student.init == "random":
            out[sname] = ("", ())
            continue
        enc, run_seed = student.encoder, STUDENT_SEED_OFFSET + seed
        spec = study.encoders[enc]
        key = f"pretrain/{enc}-student-s{seed}"
        if key not in {run.key for run in b.runs}:
            b.add(
                "pretrain",
                f"{enc}-student-s{seed}",
                spec.dataset,
                [b.nest(study.pretrain.set, "pretrain.set"), b.nest(spec.set, f"encoders.{enc}.set")],
                {},
                (),
                {
                    "section": "student_init",
                    "encoder": enc,
                    "base": study.encoder_base(enc),
                    "seed": seed,
                    "run_seed": run_seed,
                },
            )
        out[sname] = (str(rundir.run_dir(study.root, study.name, "pretrain", f"{enc}-student-s{seed}")), (key,))
    return out


def distill_runs(b: PlanBuilder) -> None:
    """Per seed and label fraction: every teacher fine-tuned on that fraction, every student's baseline trained on
    the same labelled subset alone, and every (teacher, student) pair distilled on all training images without
    labels; a baseline and its distilled students share their seed, steps and initial weights."""
    study, dist = b.study, b.study.distill
    section = b.nest(dist.set, "distill.set")
    pairs = list(product(dist.teachers, dist.students)) if dist.pairs == "all" else [tuple(p) for p in dist.pairs]
    student_base = {sname: _student_base(b, student) for sname, student in dist.students.items()}
    for seed in study.seeds:
        inits = _student_inits(b, seed)
        layers = {
            sname: [
                b.encoder_model(st.encoder) if st.encoder else {},
                section,
                b.nest(st.set, f"distill.students.{sname}.set"),
            ]
            for sname, st in dist.students.items()
        }
        for fraction in dist.label_fractions:
            teachers = _teacher_runs(b, seed, fraction)
            lf = fmt_number(fraction)
            common = {"seed": seed, "label_fraction": fraction}
            for sname, student in dist.students.items() if dist.baseline else ():
                init, deps = inits[sname]
                forced = {
                    "distill": {"teacher": "", "student_init": init, "label_weight": 1.0, "label_fraction": fraction}
                }
                b.add(
                    "distill",
                    f"baseline-{sname}-lf{lf}-s{seed}",
                    dist.dataset,
                    layers[sname],
                    forced,
                    deps,
                    {
                        "section": "baseline",
                        "student": sname,
                        "student_base": student_base[sname],
                        "student_init": student.init,
                        **common,
                    },
                )
            for tname, sname in pairs:
                teacher = teachers.get(tname)
                if teacher is None:
                    continue
                init, deps = inits[sname]
                forced = {
                    "distill": {
                        "teacher": str(teacher.run_dir),
                        "student_init": init,
                        "label_weight": 0.0,
                        "label_fraction": fraction,
                    }
                }
                tbase = study.encoder_base(dist.teachers[tname].encoder)
                b.add(
                    "distill",
                    f"{tname}-to-{sname}-lf{lf}-s{seed}",
                    dist.dataset,
                    layers[sname],
                    forced,
                    (teacher.key, *deps),
                    {
                        "section": "distill",
                        "teacher": tname,
                        "student": sname,
                        "teacher_base": tbase,
                        "student_base": student_base[sname],
                        "same_base": tbase == student_base[sname],
                        "student_init": dist.students[sname].init,
                        **common,
                    },
                )


def _class_count(study: Study, dataset: str) -> int | None:
    """Classes of a dataset: from its shards' index.json when built, else from its source spec."""
    return index_num_classes(study.shards_dir(dataset)) or source_num_classes(study.source(dataset))[0]


def _transfer_targets(b: PlanBuilder):
    """``(dataset, name part, transfer.* fields, labels)`` of every transfer target: nested k-class subsets (``draws``
    per k, one run for k = all classes), then whole datasets."""
    study, tr = b.study, b.study.transfer
    for target in tr.within:
        k_all = _class_count(study, target.dataset)
        for k in target.num_classes:
            for draw in range(1 if k == k_all else target.draws):
                yield (
                    target.dataset,
                    f"{target.dataset}-k{k}-d{draw}",
                    {"num_classes": k, "class_seed": draw},
                    {"kind": "within", "k": k, "subset_draw": draw},
                )
    for dataset in tr.across:
        k_all = _class_count(study, dataset)
        yield dataset, f"{dataset}-all", {"num_classes": 0}, {"kind": "across", "k": k_all, "subset_draw": None}


def transfer_runs(b: PlanBuilder) -> None:
    """seeds x encoders x protocols x (within: targets x k x class seeds, then across: whole datasets), and their
    baselines."""
    study, tr = b.study, b.study.transfer
    section = b.nest(tr.set, "transfer.set")
    targets = list(_transfer_targets(b))
    for seed, enc, protocol in product(study.seeds, tr.encoders, tr.protocols):
        common, deps = [b.encoder_model(enc), section], (b.pretrain_key(enc, seed),)
        labels = {"section": "transfer", "encoder": enc, "seed": seed, "protocol": protocol, "arch": b.arch(enc)}
        forced = {"encoder": b.pretrain_dir(enc, seed), "images_per_class": tr.images_per_class, "protocol": protocol}
        for dataset, part, fields, target in targets:
            b.add(
                "transfer",
                f"{enc}-{part}-{protocol}-s{seed}",
                dataset,
                common,
                {"transfer": {**forced, **fields}},
                deps,
                {**labels, **target},
            )
    transfer_baselines(b, section, targets)


SECTIONS = (
    ("pretrain", pretrain_runs),
    ("finetune", finetune_runs),
    ("distill", distill_runs),
    ("transfer", transfer_runs),
)
"""Study section -> its expander, in expansion order (the readable order of runs within a wave)."""


MAX_RUNS = 20_000
"""The most runs one study may plan: about 60 times the CPU reference study (321 runs), beyond what a queue or a
report serves well, and reached by a typo long before a real design. Above it: split the study."""


def least_runs(study: Study) -> int:
    """A lower bound of the runs ``study`` plans (baselines, student encoders and whole-dataset draws left out), from
    the lengths of its axes alone: so that a plan of hundreds of thousands of runs is refused at once instead of
    after minutes of expansion."""
    per_seed = len(study.encoders)
    if ft := study.finetune:
        cells = sum(len(ft.fractions(p)) for p in ft.protocols) * len(ft.head_layers)
        per_seed += len(ft.encoders) * cells
    if dist := study.distill:
        pairs = len(dist.teachers) * len(dist.students) if dist.pairs == "all" else len(dist.pairs)
        per_seed += len(dist.label_fractions) * (len(dist.teachers) + pairs)
    if tr := study.transfer:
        targets = sum(len(t.num_classes) for t in tr.within) + len(tr.across)
        per_seed += len(tr.encoders) * len(tr.protocols) * targets
    return len(study.seeds) * per_seed


def check_plan_size(planned: int, where: str, at_least: bool = True) -> None:
    """StudyError, one line, when a study plans more than MAX_RUNS runs."""
    if planned > MAX_RUNS:
        raise StudyError(
            f"{where}: the study plans {'at least ' if at_least else ''}{planned:,} runs, more than "
            f"{MAX_RUNS:,} (seeds x encoders x every axis of each section); split it into studies of "
            "fewer seeds or axes"
        )


def build_plan(study: Study, where: str = "study") -> Plan:
    """Expand a validated study into its runs; a run config that does not validate is a StudyError line."""
    check_plan_size(least_runs(study), where)
    b = PlanBuilder(study, where)
    for section, expand in SECTIONS:
        if section == "pretrain" or getattr(study, section):
            expand(b)
    if b.problems:
        raise StudyError(b.problems)
    check_plan_size(len(b.runs), where, at_least=False)  # with the baselines
    datasets = [
        DatasetJob(name, study.source(name), study.shards_dir(name), spec.val_fraction)
        for name, spec in study.datasets.items()
    ]
    keys = {run.key for run in b.runs}
    dangling = [
        f"{where}: run {run.key} depends on {dep}, which the study does not produce"
        for run in b.runs
        for dep in run.depends_on
        if dep not in keys
    ]
    if dangling:
        raise StudyError(dangling)
    order = {stage: i for i, stages in enumerate(WAVES) for stage in stages}
    runs = sorted(b.runs, key=lambda run: order[run.stage])  # stable: keeps the readable expansion order per wave
    return Plan(study, runs, datasets)


def load_plan(path: str | Path) -> Plan:
    """Read, validate and expand a study file: every schema, reference and run-config problem, one line each."""
    return build_plan(load_study(path), where=str(path))
