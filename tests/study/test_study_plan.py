"""A study expands into the expected runs: counts per stage, readable safe names, and dependencies wired into configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_hpc.config import SAFE_NAME
from simclr_hpc.study.plan import WAVES, build_plan, load_plan, safe_run_name
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
    n_teachers = len(ds["teachers"]) * seeds
    n_distill = (len(ds["teachers"]) * len(ds["students"]) + len(ds["students"])) * seeds  # pairs + baselines
    within = sum(len(w["num_classes"]) * len(w["class_seeds"]) for w in tr["within"])
    n_transfer = len(tr["encoders"]) * (within + len(tr["across"])) * seeds
    counts = {stage: len(plan.stage(stage)) for stage in ("pretrain", "finetune", "distill", "transfer")}
    assert counts == {"pretrain": n_pretrain, "finetune": n_grid + n_teachers, "distill": n_distill,
                      "transfer": n_transfer}
    assert len(plan.runs) == sum(counts.values()) == 4 + 10 + 12 + 16


def test_names_are_readable_safe_unique_and_deterministic(tmp_path):
    a, b = _plan(tmp_path), _plan(tmp_path)
    names = [run.key for run in a.runs]
    assert names == [run.key for run in b.runs]
    assert len(set(names)) == len(names)
    assert all(SAFE_NAME.match(run.name) and ".." not in run.name for run in a.runs)
    for key in ("pretrain/ra-s0", "finetune/ra-lf0.1-h1-linear-s1", "finetune/teacher-tb-s0", "distill/ta-to-sb-s1",
                "distill/baseline-sa-s0", "transfer/ra-sh6-k3-c1-linear-s0", "transfer/ra-sh4-all-linear-s1"):
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
    distill = plan.get("distill/tb-to-sa-s0")
    assert set(distill.depends_on) == {"finetune/teacher-tb-s0", "pretrain/ra-s0"}
    assert distill.cfg.distill.teacher == str(plan.get("finetune/teacher-tb-s0").run_dir)
    assert distill.cfg.distill.student_init == str(plan.get("pretrain/ra-s0").run_dir)
    assert distill.cfg.model.backbone == "resnet18"  # the student's architecture, from its encoder
    assert distill.labels["same_base"] is False
    assert plan.get("distill/ta-to-sa-s0").labels["same_base"] is True
    baseline = plan.get("distill/baseline-sb-s1")
    assert (baseline.cfg.distill.teacher, baseline.cfg.distill.label_weight) == ("", 1.0)
    assert baseline.cfg.train.steps == distill.cfg.train.steps
    assert baseline.cfg.model.backbone == "resnet34"
    tr = plan.get("transfer/ra-sh6-k3-c1-linear-s0")
    assert (tr.cfg.transfer.num_classes, tr.cfg.transfer.class_seed, tr.cfg.transfer.images_per_class) == (3, 1, 5)
    assert tr.cfg.data.shards == str(tmp_path / "runs" / "tiny" / "data" / "sh6")
    assert plan.get("transfer/ra-sh4-all-linear-s0").labels["k"] == 4


def test_override_layers_apply_in_order(tmp_path):
    data = study_dict(defaults={"train": {"steps": 7, "global_batch": 32}})
    data["transfer"]["set"] = {"train.steps": 3}
    data["datasets"]["sh6"]["set"] = {"data.image_size": 24}
    plan = _plan(tmp_path, data)
    assert plan.get("pretrain/ra-s0").cfg.train.steps == 2          # pretrain.set over defaults
    assert plan.get("finetune/ra-lf1-h0-linear-s0").cfg.train.steps == 7  # defaults only
    tr = plan.get("transfer/ra-sh6-k2-c0-linear-s0")
    assert (tr.cfg.train.steps, tr.cfg.train.global_batch, tr.cfg.data.image_size) == (3, 32, 24)


def test_explicit_pairs_and_no_baseline(tmp_path):
    data = study_dict()
    data["distill"] = {**data["distill"], "pairs": [["ta", "sb"]], "baseline": False}
    plan = _plan(tmp_path, data)
    assert [r.name for r in plan.stage("distill")] == ["ta-to-sb-s0", "ta-to-sb-s1"]


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
    assert len(plan.runs) > 200
    assert [w[0].stage for w in plan.waves()] == [s[0] for s in WAVES]
