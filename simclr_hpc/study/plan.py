"""Expand a study into a graph of runs: each a (stage, Config, depends_on) with a deterministic, readable, safe name.

One expander per study section (``pretrain_runs``, ``finetune_runs``, ``distill_runs`` in ``plan_distill.py``,
``transfer_runs``), each a product over the section's axes; the result is a ``runs.Plan``.

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
from the weights its teacher was fine-tuned from (``plan_distill.py``).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

from simclr_hpc.data.index import index_num_classes
from simclr_hpc.data.source_spec import source_num_classes
from simclr_hpc.study.builder import PlanBuilder, finetune_baselines, transfer_baselines
from simclr_hpc.study.plan_distill import distill_runs
from simclr_hpc.study.runs import WAVES, DatasetJob, Plan, fmt_number
from simclr_hpc.study.schema import Study, StudyError
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
