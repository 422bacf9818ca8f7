"""A study expands into the expected runs: counts per stage, readable safe names, and dependencies wired into configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_hpc.config import SAFE_NAME
from simclr_hpc.study.plan import WAVES, build_plan, load_plan
from simclr_hpc.study.runs import safe_run_name
from simclr_hpc.study.spec import StudyError, parse_study
from tests.study.helpers import TINY, study_dict, write_study

REPO = Path(__file__).resolve().parents[2]


def _plan(tmp_path, data=None):
    return load_plan(write_study(tmp_path, data))


def test_run_counts_per_stage_match_the_study_axes(tmp_path):
    plan = _plan(tmp_path)
    seeds = len(TINY["seeds"])
    ft, ds, tr = TINY["finetune"], TINY["distill"], TINY["transfer"]
    n_pretrain = len(TINY["encoders"]) * seeds
    n_grid = len(ft["encoders"]) * len(ft["label_fractions"]) * len(ft["head_layers"]) * len(ft["protocols"]) * seeds
    n_teachers = len(ds["teachers"]) * seeds  # one label fraction (the default 10 %)
    n_distill = (len(ds["teachers"]) * len(ds["students"]) + len(ds["students"])) * seeds  # pairs + baselines
    within = sum(len(w["num_classes"]) * w["draws"] - (w["draws"] - 1) for w in tr["within"])  # k = 6: all, once
    n_transfer = len(tr["encoders"]) * (within + len(tr["across"])) * seeds
    # Baselines: one random encoder per architecture and protocol, and one pixel probe, per split and seed.
    n_ft_baselines = len(ft["label_fractions"]) * (len(ft["protocols"]) * 1 + 1) * seeds
    n_tr_baselines = (within + len(tr["across"])) * (1 + 1) * seeds
    counts = {stage: len(plan.stage(stage)) for stage in ("pretrain", "finetune", "distill", "transfer")}
    assert counts == {
        "pretrain": n_pretrain,
        "finetune": n_grid + n_teachers + n_ft_baselines,
        "distill": n_distill,
        "transfer": n_transfer + n_tr_baselines,
    }
    assert len(plan.runs) == sum(counts.values()) == 4 + (12 + 8) + 12 + (12 + 24)


def test_baselines_share_the_split_seed_and_architecture_of_the_runs_they_are_compared_with(tmp_path):
    plan = _plan(tmp_path)
    enc, rnd = plan.get("finetune/ra-lf0.1-h0-linear-s1"), plan.get("finetune/random-ra-lf0.1-h0-linear-s1")
    pix = plan.get("finetune/pixels-sh4-lf0.1-linear-s1")
    assert (rnd.cfg.finetune.encoder, pix.cfg.finetune.encoder) == ("random", "pixels") and not rnd.depends_on
    for base in (rnd, pix):
        assert (base.cfg.run.seed, base.cfg.finetune.label_fraction, base.cfg.data.shards) == (
            enc.cfg.run.seed,
            enc.cfg.finetune.label_fraction,
            enc.cfg.data.shards,
        )
        assert base.cfg.optim == enc.cfg.optim and base.cfg.train == enc.cfg.train  # the same probe recipe
    assert rnd.cfg.model == enc.cfg.model and rnd.labels["arch"] == enc.labels["arch"]
    assert (rnd.labels["baseline"], pix.labels["baseline"]) == ("random", "pixels")
    tr = plan.get("transfer/ra-sh6-k3-d1-linear-s0")
    for name in ("transfer/random-ra-sh6-k3-d1-linear-s0", "transfer/pixels-sh6-k3-d1-linear-s0"):
        base = plan.get(name)
        assert (
            base.cfg.transfer.num_classes,
            base.cfg.transfer.class_seed,
            base.cfg.transfer.images_per_class,
            base.cfg.run.seed,
        ) == (3, 1, 5, 0)
        assert base.labels["k"] == tr.labels["k"] and base.labels["kind"] == "within"
    none = study_dict()
    none["finetune"] = {**none["finetune"], "baselines": []}
    none["transfer"] = {**none["transfer"], "baselines": ["pixels"]}
    plan = _plan(tmp_path, none)
    assert not [r for r in plan.stage("finetune") if r.labels.get("baseline")]
    assert {r.labels["baseline"] for r in plan.stage("transfer") if r.labels.get("baseline")} == {"pixels"}


def test_names_are_readable_safe_unique_and_deterministic(tmp_path):
    a, b = _plan(tmp_path), _plan(tmp_path)
    names = [run.key for run in a.runs]
    assert names == [run.key for run in b.runs]
    assert len(set(names)) == len(names)
    assert all(SAFE_NAME.match(run.name) and ".." not in run.name for run in a.runs)
    for key in (
        "pretrain/ra-s0",
        "finetune/ra-lf0.1-h1-linear-s1",
        "finetune/teacher-tb-lf0.1-s0",
        "distill/ta-to-sb-lf0.1-s1",
        "distill/baseline-sa-lf0.1-s0",
        "transfer/ra-sh6-k3-d1-linear-s0",
        "transfer/ra-sh6-k6-d0-linear-s0",
        "transfer/ra-sh4-all-linear-s1",
    ):
        assert key in names
    assert all(run.run_dir == tmp_path / "runs" / "tiny" / run.stage / run.name for run in a.runs)


def test_dependencies_exist_come_earlier_and_are_wired_into_configs(tmp_path):
    plan = _plan(tmp_path)
    wave_of = {run.key: i for i, wave in enumerate(plan.waves()) for run in wave}
    for run in plan.runs:
        for dep in run.depends_on:
            assert wave_of[dep] < wave_of[run.key], (run.key, dep)
    ft = plan.get("finetune/ra-lf0.1-h1-linear-s1")
    assert ft.depends_on == ("pretrain/ra-s1",)
    assert ft.cfg.finetune.encoder == str(plan.get("pretrain/ra-s1").run_dir)
    assert (ft.cfg.finetune.label_fraction, ft.cfg.finetune.from_head_layer, ft.cfg.run.seed) == (0.1, 1, 1)
    distill = plan.get("distill/tb-to-sa-lf0.1-s0")
    teacher = plan.get("finetune/teacher-tb-lf0.1-s0")
    assert distill.depends_on == ("finetune/teacher-tb-lf0.1-s0",)  # a random-init student needs no pretrain run
    assert distill.cfg.distill.teacher == str(teacher.run_dir) and distill.cfg.distill.student_init == ""
    assert (distill.cfg.distill.label_weight, teacher.cfg.finetune.protocol) == (0.0, "full")  # SimCLRv2's regime
    assert distill.cfg.model.backbone == "resnet18"  # the student's architecture, from its encoder
    assert distill.labels["same_base"] is False
    assert plan.get("distill/ta-to-sa-lf0.1-s0").labels["same_base"] is True
    baseline = plan.get("distill/baseline-sb-lf0.1-s1")
    assert (baseline.cfg.distill.teacher, baseline.cfg.distill.label_weight) == ("", 1.0)
    assert baseline.cfg.train.steps == distill.cfg.train.steps
    assert baseline.cfg.model.backbone == "resnet34"
    tr = plan.get("transfer/ra-sh6-k3-d1-linear-s0")
    assert (tr.cfg.transfer.num_classes, tr.cfg.transfer.class_seed, tr.cfg.transfer.images_per_class) == (3, 1, 5)
    assert tr.cfg.data.shards == str(tmp_path / "runs" / "tiny" / "data" / "sh6")
    assert plan.get("transfer/ra-sh4-all-linear-s0").labels["k"] == 4


def test_override_layers_apply_in_order(tmp_path):
    data = study_dict(defaults={"train": {"steps": 7, "global_batch": 32}})
    data["transfer"]["set"] = {"train.steps": 3}
    data["datasets"]["sh6"]["set"] = {"data.image_size": 24}
    plan = _plan(tmp_path, data)
    assert plan.get("pretrain/ra-s0").cfg.train.steps == 2  # pretrain.set over defaults
    assert plan.get("finetune/ra-lf1-h0-linear-s0").cfg.train.steps == 7  # defaults only
    tr = plan.get("transfer/ra-sh6-k2-d0-linear-s0")
    assert (tr.cfg.train.steps, tr.cfg.train.global_batch, tr.cfg.data.image_size) == (3, 32, 24)


def test_explicit_pairs_and_no_baseline(tmp_path):
    data = study_dict()
    data["distill"] = {**data["distill"], "pairs": [["ta", "sb"]], "baseline": False}
    plan = _plan(tmp_path, data)
    assert [r.name for r in plan.stage("distill")] == ["ta-to-sb-lf0.1-s0", "ta-to-sb-lf0.1-s1"]


def test_long_names_are_shortened_with_a_hash_and_stay_unique():
    long_a = safe_run_name("x" * 120, "s0")
    long_b = safe_run_name("x" * 120, "s1")
    assert len(long_a) <= 100 and long_a != long_b and SAFE_NAME.match(long_a)


def test_colliding_run_names_are_a_study_error():
    data = study_dict()
    data["distill"]["teachers"] = {"a-to-b": {"encoder": "ra"}, "a": {"encoder": "ra"}}
    data["distill"]["students"] = {"c": {"encoder": "ra"}, "b-to-c": {"encoder": "ra"}}  # a-to-b-to-c twice
    study = parse_study(data)
    with pytest.raises(StudyError, match="both named"):
        build_plan(study)


def test_paper_study_is_cluster_sized():
    plan = load_plan(REPO / "configs" / "studies" / "paper.yaml")
    assert {r.cfg.model.backbone for r in plan.stage("pretrain")} >= {"resnet18", "resnet50"}
    assert len(plan.study.seeds) >= 3
    assert {r.labels["dataset"] for r in plan.stage("transfer")} == {"cifar10", "cifar100", "stl10"}
    assert plan.study.finetune.primary.protocol == "full" and "full" in plan.study.finetune.protocols
    assert len({plan.study.encoder_base(t.encoder) for t in plan.study.distill.teachers.values()}) >= 3
    assert all(s.init == "random" for s in plan.study.distill.students.values())
    assert max(plan.study.distill.label_fractions) <= 0.1 and min(w.draws for w in plan.study.transfer.within) >= 5
    assert len(plan.runs) > 200
    assert [w[0].stage for w in plan.waves()] == [s[0] for s in WAVES]


def test_encoders_may_vary_by_contrastive_properties(tmp_path):
    """Temperature, batch (negatives), head depth, augmentation strength and steps per encoder, for the properties
    analysis: each reaches its pretrain run, and the head depth its fine-tune runs."""
    data = study_dict()
    data["encoders"] = {
        "t01": {"dataset": "sh4", "set": {"pretrain.temperature": 0.1, "train.global_batch": 32}},
        "deep": {
            "dataset": "sh4",
            "set": {"model.proj_layers": 3, "data.crop_min_scale": 0.5, "data.color_strength": 1.0, "train.steps": 5},
        },
    }
    data["finetune"] = {**data["finetune"], "encoders": ["t01", "deep"]}
    data["distill"] = None
    data["transfer"] = {**data["transfer"], "encoders": ["t01"]}
    plan = _plan(tmp_path, data)
    t01, deep = plan.get("pretrain/t01-s0").cfg, plan.get("pretrain/deep-s0").cfg
    assert (t01.pretrain.temperature, t01.train.global_batch) == (0.1, 32)
    assert (deep.model.proj_layers, deep.data.crop_min_scale, deep.data.color_strength, deep.train.steps) == (
        3,
        0.5,
        1.0,
        5,
    )
    assert plan.get("finetune/deep-lf1-h1-linear-s0").cfg.model.proj_layers == 3
    assert plan.get("finetune/random-deep-lf1-h0-linear-s0").cfg.model.proj_layers == 3


BUNDLED = ["demo.yaml", "smoke.yaml", "paper.yaml", "reference-cpu.yaml"]


def _teacher_sources(plan) -> dict[str, set[str]]:
    return {
        str(r.run_dir): {str(r.run_dir), r.cfg.finetune.encoder}
        for r in plan.stage("finetune")
        if r.labels.get("section") == "teacher"
    }


@pytest.mark.parametrize("name", [*BUNDLED, "tiny-pretrained-students"])
def test_no_student_starts_from_its_teachers_weights(tmp_path, name):
    if name in BUNDLED:
        plan = load_plan(REPO / "configs" / "studies" / name)
    else:
        data = study_dict()
        data["distill"]["students"] = {
            "sa": {"encoder": "ra", "init": "pretrained"},
            "sb": {"encoder": "rb", "init": "pretrained"},
        }
        plan = _plan(tmp_path, data)
        init = plan.get("distill/ta-to-sa-lf0.1-s1").cfg.distill.student_init
        assert init == str(plan.get("pretrain/ra-student-s1").run_dir)  # its own encoder, pretrained under 1001
        assert plan.get("pretrain/ra-student-s1").cfg.run.seed == 1001
        assert plan.get("pretrain/ra-student-s1").labels["section"] == "student_init"
    teachers = _teacher_sources(plan)
    pairs = [r for r in plan.stage("distill") if r.cfg.distill.teacher]
    assert pairs
    for run in pairs:
        assert run.cfg.distill.student_init not in teachers[run.cfg.distill.teacher], run.key
        assert run.cfg.distill.label_weight == 0.0  # distilled on every image, without labels
        teacher = next(r for r in plan.stage("finetune") if str(r.run_dir) == run.cfg.distill.teacher)
        baseline = plan.get(
            f"distill/baseline-{run.labels['student']}-lf{teacher.cfg.finetune.label_fraction:g}-s{run.labels['seed']}"
        )
        # the baseline's labelled subset is the teacher's (same fraction, same seed), with the student's budget
        assert (baseline.cfg.distill.label_fraction, baseline.cfg.run.seed) == (
            teacher.cfg.finetune.label_fraction,
            teacher.cfg.run.seed,
        )
        assert (baseline.cfg.train.steps, baseline.cfg.distill.student_init) == (
            run.cfg.train.steps,
            run.cfg.distill.student_init,
        )


@pytest.mark.parametrize("name", BUNDLED)
def test_class_subsets_are_nested_seed_varied_and_never_duplicated(name):
    import numpy as np

    from simclr_hpc.data.subsets import class_subset

    plan = load_plan(REPO / "configs" / "studies" / name)
    within = [r for r in plan.stage("transfer") if r.labels["kind"] == "within" and not r.labels.get("baseline")]
    classes = {}
    for run in within:
        total = {"shapes20": 20, "cifar100": 100}[run.labels["dataset"]]
        labels = np.repeat(np.arange(total), 2)
        classes[run.key] = frozenset(
            class_subset(labels, run.cfg.transfer.num_classes, run.cfg.transfer.class_seed, seed=run.cfg.run.seed)[1]
        )
    by_draw: dict = {}
    for run in within:
        by_draw.setdefault((run.labels["encoder"], run.labels["seed"], run.labels["subset_draw"]), []).append(run)
    for runs in by_draw.values():
        nested = sorted((classes[r.key] for r in runs), key=len)
        assert all(a < b for a, b in zip(nested, nested[1:]))  # 2 within 5 within 10 ...
    seen = [(r.labels["encoder"], r.labels["seed"], r.labels["protocol"], classes[r.key]) for r in within]
    assert len(seen) == len(set(seen))  # the whole dataset counted once, no subset twice
    smallest = min(r.labels["k"] for r in within)
    per_seed = {
        r.labels["seed"]: classes[r.key] for r in within if r.labels["k"] == smallest and r.labels["subset_draw"] == 0
    }
    assert len(set(per_seed.values())) == len(per_seed)  # each seed draws its own subsets


def test_full_fine_tuning_can_be_kept_to_the_fractions_the_head_layer_contrast_needs(tmp_path):
    data = study_dict()
    data["finetune"] = {**data["finetune"], "protocols": ["linear", "full"], "full_label_fractions": [0.1]}
    plan = _plan(tmp_path, data)
    full = [
        r for r in plan.stage("finetune") if r.labels.get("protocol") == "full" and r.labels["section"] == "finetune"
    ]
    assert {r.labels["label_fraction"] for r in full} == {0.1}
    assert len([r for r in full if not r.labels.get("baseline")]) == 2 * 2  # 2 layers x 2 seeds, one encoder
    assert len([r for r in full if r.labels.get("baseline") == "random"]) == 2  # its random-init twin, per seed
    assert (
        len(
            [r for r in plan.stage("finetune") if r.labels.get("protocol") == "linear" and not r.labels.get("baseline")]
        )
        == 2 * 2 * 2
    )  # linear keeps every fraction
