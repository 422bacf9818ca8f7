"""The report's judgement on synthetic results: margins over baselines (flagged below only when the interval excludes
0), each finding's verdict (inconclusive with 2 seeds), bounded intervals in the tables, and properties vs fine-tuned
accuracy over encoders."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from simclr_hpc.study.aggregate import collect
from simclr_hpc.study.baselines import summarize_baselines
from simclr_hpc.study.findings import summarize_verdicts
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.properties import summarize_properties
from simclr_hpc.study.report import write_report
from simclr_hpc.study.separability import correct_probability
from tests.study.helpers import study_dict, write_study


def _top1(labels: dict) -> float:
    """Encoders beat random by ~20 points and pixels by ~5 (r18 at 10 % labels: below pixels); layer 1 > layer 0;
    same-base distillation gains more; fewer classes transfer better (d' falls with k: top-1 falls faster than the
    extra competitors alone would make it)."""
    seed = labels["seed"]
    if labels["section"] in ("finetune", "teacher", "transfer"):
        k = labels.get("k") or 4
        if labels["section"] == "transfer":
            base = float(correct_probability(2.0 - 0.4 * math.log2(k), k)[0])
        else:
            base = 0.6 + 0.2 * labels["label_fraction"]
        shift = {"random": -0.2, "pixels": -0.05}.get(labels.get("baseline"), 0.0)
        if labels.get("baseline") is None and labels["section"] == "finetune" and labels["label_fraction"] == 0.1:
            shift = -0.08 + 0.03 * labels["head_layer"]  # below pixels at 10% labels
        return base + shift + 0.004 * seed
    if labels["section"] == "baseline":
        return 0.6 + 0.003 * seed
    return (
        0.6
        + (0.08 if labels["same_base"] else 0.02)
        + 0.005 * seed
        + 0.002 * (seed % 2)
        + 0.001 * (labels["student"] == "sa")
    )


def _results(tmp_path, seeds):
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan = load_plan(write_study(tmp_path, study_dict(seeds=seeds)))
    for run in plan.runs:
        m = {"top1": None, "eval_images": 480 if run.stage != "transfer" else 2000}
        if run.stage == "pretrain":
            s, e = run.labels["seed"], run.labels["encoder"] == "rb"
            m = {
                "knn_top1_k200": 0.5 + 0.05 * s + 0.1 * e,
                "alignment": 1.0 - 0.1 * s,
                "uniformity": -2.0 - 0.3 * s,
                "embed_std": 0.05,
                "positive_rank1": 0.3,
                "eval_images": 200,
                "monitor_s_total": 1.0,
            }
        else:
            k = run.labels.get("k") or 4
            m.update(top1=_top1(run.labels), num_classes=k)
            m["chance_norm_top1"] = (m["top1"] - 1 / k) / (1 - 1 / k)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "result.json").write_text(
            json.dumps(
                {"stage": run.stage, "metrics": m, "config_hash": run.cfg.hash(run.stage), "steps": 2, "wall_s": 10.0}
            )
        )
    return plan


def test_margins_are_paired_by_seed_and_only_an_interval_below_0_is_flagged(tmp_path):
    plan = _results(tmp_path, [0, 1, 2])
    cells = {(c.encoder, c.where): c for c in summarize_baselines(collect(plan))}
    full = cells[("ra", "sh4, 100% labels, head layer 0")]
    margins = {m.baseline: m for m in full.margins}
    assert margins["random"].margin.mean == pytest.approx(0.2) and margins["pixels"].margin.mean == pytest.approx(0.05)
    assert margins["random"].margin.n == 3 and not margins["pixels"].below and margins["pixels"].above
    low = cells[("ra", "sh4, 10% labels, head layer 0")]
    assert {m.baseline: m.below for m in low.margins} == {"random": False, "pixels": True}
    assert full.eval_images == "480"
    text = write_report(plan).path.read_text()
    headline = text.split("## Headline")[1].split("Runs:")[0]
    assert "**below its pixels baseline**: ra (finetune linear, sh4, 10% labels, head layer 0)" in headline
    assert "**below its random baseline**" not in headline
    from typer.testing import CliRunner

    from simclr_hpc.cli.main import app

    printed = CliRunner().invoke(app, ["study", "report", str(tmp_path / "study.yaml")]).output
    assert "- reproduced: fine-tuning from projection-head layer 1 beats fine-tuning from the encoder output" in printed
    assert "- below its pixels baseline: ra (finetune linear, sh4, 10% labels, head layer 0)" in printed


def test_a_margin_whose_interval_holds_0_is_listed_as_not_distinguishable(tmp_path):
    plan = _results(tmp_path, [0, 1, 2])
    noisy = plan.get("finetune/pixels-sh4-lf0.1-linear-s1")  # one seed's pixels far above: the margin's CI holds 0
    data = json.loads(noisy.result_path.read_text())
    data["metrics"]["top1"] = 0.2
    noisy.result_path.write_text(json.dumps(data))
    low = next(c for c in summarize_baselines(collect(plan)) if c.where == "sh4, 10% labels, head layer 0")
    pixels = next(m for m in low.margins if m.baseline == "pixels")
    assert pixels.indistinguishable and not pixels.below
    text = write_report(plan).path.read_text()
    assert "ra (finetune linear, sh4, 10% labels, head layer 0) vs pixels" in text.split("Not distinguishable")[1]
    assert "**below its pixels baseline**: ra (finetune linear, sh4, 10% labels, head layer 0)" not in text


def _verdicts(plan) -> dict:
    summary = summarize_verdicts(collect(plan), plan.study)
    return {v.finding.split(" ")[0]: v for v in summary.verdicts}


def test_verdicts_follow_the_effects_with_three_seeds_and_are_inconclusive_with_two(tmp_path):
    three = _verdicts(_results(tmp_path / "a", [0, 1, 2]))
    assert three["fine-tuning"].label == "reproduced" and three["fine-tuning"].test.mean == pytest.approx(0.03)
    assert three["distillation"].label == "reproduced" and three["distillation"].test.mean == pytest.approx(0.06)
    assert three["transfer"].label == "reproduced" and three["transfer"].test.mean < 0
    assert all(v.test.n == 3 for v in three.values())  # n counts seeds, whatever was averaged within them
    two = _verdicts(_results(tmp_path / "b", [0, 1]))
    assert len(two) == 3 and {v.label for v in two.values()} == {"inconclusive"}
    assert all("fewer than 3" in v.reason for v in two.values())


def test_report_tables_give_bounded_intervals_and_eval_sizes(tmp_path):
    plan = _results(tmp_path, [0, 1, 2])
    rep = write_report(plan)
    text = rep.path.read_text()
    assert "## Verdicts" in text and "## Encoders against their baselines" in text
    assert "## Pretraining: online monitor" in text
    assert "Test sampling is at most" in text  # the transfer section says whether its test sets are large enough
    assert "| eval images |" in text.split("## 1. Fine-tuning")[1].split("\n\n")[2]
    findings = (rep.path.parent / "findings.md").read_text().splitlines()  # what READMEs include beside verdicts.md
    starts = ("- finetune linear, sh4, 10% labels", "- distillation at 10% labels", "- transfer of ra (linear) to sh6")
    assert [next(i for i, line in enumerate(findings) if line.startswith(s)) for s in starts] == sorted(
        next(i for i, line in enumerate(findings) if line.startswith(s)) for s in starts
    )  # in report order
    verdicts = (rep.path.parent / "verdicts.md").read_text()
    assert verdicts in text + "\n" and verdicts.count("\n") == 2 + 3  # header, rule, one row per finding
    for cell in summarize_baselines(collect(plan)):
        assert 0.0 <= cell.top1.lo <= cell.top1.hi <= 1.0


def test_properties_correlate_over_encoders_with_their_seeds_averaged(tmp_path):
    data = study_dict(seeds=[0, 1, 2])
    data["encoders"]["rc"] = {"dataset": "sh4", "set": {"model.backbone": "resnet18", "pretrain.temperature": 0.5}}
    data["finetune"] = {**data["finetune"], "encoders": ["ra", "rb", "rc"]}
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan = load_plan(write_study(tmp_path, data))
    for run in plan.runs:
        enc, s = run.labels.get("encoder"), run.labels["seed"]
        if run.stage == "pretrain":
            m = {
                "knn_top1_k200": {"ra": 0.5, "rb": 0.7, "rc": 0.6}[enc] + 0.01 * s,
                "alignment": 1.0,
                "uniformity": -2.0 - 0.1 * s,
            }
        elif run.stage == "finetune" and not run.labels.get("baseline"):
            m = {"top1": {"ra": 0.8, "rb": 0.9, "rc": 0.85}.get(enc, 0.7) + 0.002 * s, "num_classes": 4}
        else:
            continue
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "result.json").write_text(
            json.dumps({"stage": run.stage, "metrics": m, "config_hash": run.cfg.hash(run.stage)})
        )
    corrs = summarize_properties(collect(plan))
    knn = next(c for c in corrs if c.prop == "knn_top1_k200" and c.label_fraction == 1.0)
    assert [p[2] for p in knn.points] == ["ra", "rb", "rc"] and knn.seeds == 3  # one point per encoder
    assert knn.points[0][0] == pytest.approx(0.51) and knn.points[1][1] == pytest.approx(0.902)
    xs, ys = [p[0] for p in knn.points], [p[1] for p in knn.points]
    assert knn.rho.mean == pytest.approx(stats.spearmanr(xs, ys).statistic) == 1.0
    assert knn.p == pytest.approx(1 / 3)  # 3 encoders: 2 of the 6 pairings are as extreme
    flat = next(c for c in corrs if c.prop == "uniformity")  # the same for every encoder: no rho, and it says so
    assert math.isnan(flat.rho.mean) and math.isnan(flat.p)
    assert "properties.png" in write_report(plan).path.read_text()
