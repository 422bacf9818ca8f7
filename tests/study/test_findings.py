"""The report's judgement on synthetic results: margins over baselines (and the flag below them), each finding's
verdict (inconclusive with 2 seeds), bounded intervals in the tables, and properties vs fine-tuned accuracy."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from simclr_hpc.study.aggregate import collect
from simclr_hpc.study.findings import summarize_baselines, summarize_properties, summarize_verdicts
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.report import write_report
from tests.study.helpers import study_dict, write_study


def _top1(labels: dict) -> float:
    """Encoders beat random by ~20 points and pixels by ~5 (r18 at 10 % labels: below pixels); layer 1 > layer 0;
    same-base distillation gains more; fewer classes transfer better."""
    seed = labels["seed"]
    if labels["section"] in ("finetune", "teacher", "transfer"):
        k = labels.get("k") or 4
        base = 0.95 - 0.12 * math.log2(k) if labels["section"] == "transfer" else 0.6 + 0.2 * labels["label_fraction"]
        shift = {"random": -0.2, "pixels": -0.05}.get(labels.get("baseline"), 0.0)
        if labels.get("baseline") is None and labels["section"] == "finetune" and labels["label_fraction"] == 0.1:
            shift = -0.08 + 0.03 * labels["head_layer"]  # below pixels at 10% labels
        return base + shift + 0.004 * seed
    if labels["section"] == "baseline":
        return 0.6 + 0.003 * seed
    return 0.6 + (0.08 if labels["same_base"] else 0.02) + 0.005 * seed + 0.002 * (seed % 2)


def _results(tmp_path, seeds):
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan = load_plan(write_study(tmp_path, study_dict(seeds=seeds)))
    for run in plan.runs:
        m = {"top1": None, "eval_images": 480}
        if run.stage == "pretrain":
            s = run.labels["seed"]
            m = {"knn_top1_k200": 0.5 + 0.05 * s, "alignment": 1.0 - 0.1 * s, "uniformity": -2.0 - 0.3 * s,
                 "embed_std": 0.05, "positive_rank1": 0.3, "eval_images": 200, "monitor_s_total": 1.0}
        else:
            k = run.labels.get("k") or 4
            m.update(top1=_top1(run.labels), num_classes=k)
            m["chance_norm_top1"] = (m["top1"] - 1 / k) / (1 - 1 / k)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "result.json").write_text(json.dumps(
            {"stage": run.stage, "metrics": m, "config_hash": run.cfg.hash(run.stage), "steps": 2, "wall_s": 10.0}))
    return plan


def test_margins_are_paired_by_seed_and_a_number_below_its_baseline_is_flagged(tmp_path):
    plan = _results(tmp_path, [0, 1, 2])
    cells = {(c.encoder, c.where): c for c in summarize_baselines(collect(plan))}
    full = cells[("ra", "sh4, 100% labels, head layer 0")]
    margins = {m.baseline: m for m in full.margins}
    assert margins["random"].margin.mean == pytest.approx(0.2) and margins["pixels"].margin.mean == pytest.approx(0.05)
    assert margins["random"].margin.n == 3 and not margins["pixels"].below
    low = cells[("ra", "sh4, 10% labels, head layer 0")]
    assert {m.baseline: m.below for m in low.margins} == {"random": False, "pixels": True}
    assert full.eval_images == "480"
    text = write_report(plan).path.read_text()
    headline = text.split("## Headline findings")[1].split("Runs:")[0]
    assert "**below its pixels baseline**: ra (finetune linear, sh4, 10% labels, head layer 0)" in headline
    assert "**below its random baseline**" not in headline
    from typer.testing import CliRunner

    from simclr_hpc.cli.main import app

    printed = CliRunner().invoke(app, ["study", "report", str(tmp_path / "study.yaml")]).output
    assert "  reproduced (the interval excludes 0 on the paper's side): fine-tuning from head layer 1" in printed
    assert "  below its pixels baseline: ra (finetune linear, sh4, 10% labels, head layer 0)" in printed


def test_verdicts_follow_the_effects_with_three_seeds_and_are_inconclusive_with_two(tmp_path):
    three = {v.finding.split(" ")[0]: v for v in summarize_verdicts(collect(_results(tmp_path / "a", [0, 1, 2])))}
    assert three["fine-tuning"].label == "reproduced" and three["fine-tuning"].effect.mean == pytest.approx(0.03)
    assert three["distillation"].label == "reproduced"
    assert three["transfer"].label == "reproduced" and three["transfer"].effect.mean < 0
    two = summarize_verdicts(collect(_results(tmp_path / "b", [0, 1])))
    assert len(two) == 3 and {v.label for v in two} == {"inconclusive"}
    assert all("fewer than 3" in v.reason for v in two)


def test_report_tables_give_bounded_intervals_and_eval_sizes_and_properties_correlate(tmp_path):
    plan = _results(tmp_path, [0, 1, 2])
    text = write_report(plan).path.read_text()
    assert "## Encoders against their baselines" in text and "## Pretraining: online monitor" in text
    assert "| eval images |" in text.split("## 1. Fine-tuning")[1].split("\n\n")[2]
    corrs = summarize_properties(collect(plan))
    knn = next(c for c in corrs if c.prop == "knn_top1_k200" and c.label_fraction == 1.0)
    xs, ys = [p[0] for p in knn.points], [p[1] for p in knn.points]
    assert len(knn.points) == 3 and knn.rho.mean == pytest.approx(stats.spearmanr(xs, ys).statistic)
    assert "properties.png" in text
    for cell in summarize_baselines(collect(plan)):
        assert 0.0 <= cell.top1.lo <= cell.top1.hi <= 1.0
