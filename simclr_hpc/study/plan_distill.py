"""The distillation section's expander, ``distill_runs``: teachers, students' baselines and (teacher, student) pairs.

Per seed and label fraction: every teacher fine-tuned on that fraction of the labels (``finetune/teacher-...``), every
student trained on the same labelled subset alone (``distill/baseline-...``, when ``distill.baseline``) and every
(teacher, student) pair distilled on all training images without labels (``distill/<teacher>-to-<student>-...``). Run
names are in ``plan.py``'s docstring, which calls this expander with the other sections'.

A student never starts from the weights its teacher was fine-tuned from: it is random-init (SimCLRv2's students) or
starts from its encoder pretrained under seed ``STUDENT_SEED_OFFSET + s`` (``pretrain/<encoder>-student-s<s>``), a run
of its own that no other seed shares.
"""

from __future__ import annotations

from itertools import product
from typing import NamedTuple

from simclr_hpc import rundir
from simclr_hpc.study.builder import PlanBuilder
from simclr_hpc.study.runs import RunSpec, fmt_number
from simclr_hpc.study.schema import STUDENT_SEED_OFFSET, nest_overrides


class StudentRuns(NamedTuple):
    """What every run of one student (its baselines and its distillations) shares under one seed."""

    layers: list[dict]
    """Config layers: its encoder's ``model.*``, ``distill.set``, its own ``set``."""
    init_dir: str
    """``distill.student_init``: empty for a random-init student, else its encoder's pretrain run directory."""
    depends_on: tuple[str, ...]
    """The run that pretrains its encoder, if it starts from one."""


def distill_runs(b: PlanBuilder) -> None:
    """Per seed and label fraction: every teacher fine-tuned on that fraction, every student's baseline trained on
    the same labelled subset alone, and every (teacher, student) pair distilled on all training images without
    labels; a baseline and its distilled students share their seed, steps and initial weights."""
    study, dist = b.study, b.study.distill
    section = b.nest(dist.set, "distill.set")
    pairs = list(product(dist.teachers, dist.students)) if dist.pairs == "all" else [tuple(p) for p in dist.pairs]
    bases = {sname: _student_base(b, student) for sname, student in dist.students.items()}
    for seed in study.seeds:
        students = _students(b, seed, section)
        for fraction in dist.label_fractions:
            teachers = _teacher_runs(b, seed, fraction)
            if dist.baseline:
                _baseline_runs(b, seed, fraction, students, bases)
            _pair_runs(b, seed, fraction, pairs, teachers, students, bases)


def _student_base(b: PlanBuilder, student) -> str:
    """Base-model label of a distillation student: explicit, its encoder's, or the backbone its overrides give."""
    if student.base:
        return student.base
    if student.encoder:
        return b.study.encoder_base(student.encoder)
    model = nest_overrides(b.study.defaults).get("model", {}) | b.nest(student.set, "").get("model", {})
    return str(model.get("backbone", "resnet18"))


def _students(b: PlanBuilder, seed: int, section: dict) -> dict[str, StudentRuns]:
    """Student name -> what its runs of ``seed`` share (planning its encoder's pretrain run where it needs one)."""
    dist, inits = b.study.distill, _student_inits(b, seed)
    layers = {
        sname: [
            b.encoder_model(st.encoder) if st.encoder else {},
            section,
            b.nest(st.set, f"distill.students.{sname}.set"),
        ]
        for sname, st in dist.students.items()
    }
    return {sname: StudentRuns(layers[sname], *inits[sname]) for sname in dist.students}


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


def _baseline_runs(
    b: PlanBuilder, seed: int, fraction: float, students: dict[str, StudentRuns], bases: dict[str, str]
) -> None:
    """Every student trained on the labelled subset alone (no teacher, label weight 1): its distillations' baseline."""
    dist = b.study.distill
    for sname, student in dist.students.items():
        run = students[sname]
        b.add(
            "distill",
            f"baseline-{sname}-lf{fmt_number(fraction)}-s{seed}",
            dist.dataset,
            run.layers,
            {"distill": {"teacher": "", "student_init": run.init_dir, "label_weight": 1.0, "label_fraction": fraction}},
            run.depends_on,
            {
                "section": "baseline",
                "student": sname,
                "student_base": bases[sname],
                "student_init": student.init,
                "seed": seed,
                "label_fraction": fraction,
            },
        )


def _pair_runs(
    b: PlanBuilder,
    seed: int,
    fraction: float,
    pairs: list[tuple[str, str]],
    teachers: dict[str, RunSpec],
    students: dict[str, StudentRuns],
    bases: dict[str, str],
) -> None:
    """Every (teacher, student) pair whose teacher run was planned, distilled on all training images without labels."""
    dist = b.study.distill
    for tname, sname in pairs:
        teacher = teachers.get(tname)
        if teacher is None:
            continue
        run = students[sname]
        forced = {
            "distill": {
                "teacher": str(teacher.run_dir),
                "student_init": run.init_dir,
                "label_weight": 0.0,
                "label_fraction": fraction,
            }
        }
        tbase = b.study.encoder_base(dist.teachers[tname].encoder)
        b.add(
            "distill",
            f"{tname}-to-{sname}-lf{fmt_number(fraction)}-s{seed}",
            dist.dataset,
            run.layers,
            forced,
            (teacher.key, *run.depends_on),
            {
                "section": "distill",
                "teacher": tname,
                "student": sname,
                "teacher_base": tbase,
                "student_base": bases[sname],
                "same_base": tbase == bases[sname],
                "student_init": dist.students[sname].init,
                "seed": seed,
                "label_fraction": fraction,
            },
        )
