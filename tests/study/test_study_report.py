"""Aggregation and report on synthetic result.json files: CI math, the paired test, the slope, failed runs listed."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from simclr_hpc.study.aggregate import collect
from simclr_hpc.study.engine import record_event
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.report import write_report
from simclr_hpc.study.stats import ols_slope, paired_test, t_interval
from tests.study.helpers import write_study


def _write_result(run, top1: float, k: int = 4, **metrics) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    m = {"top1": top1, "num_classes": k, "chance_norm_top1": (top1 - 1 / k) / (1 - 1 / k), "loss": 0.5, **metrics}
    (run.run_dir / "result.json").write_text(json.dumps({"stage": run.stage, "run": run.name, "metrics": m,
                                                         "config_hash": run.cfg.hash(run.stage), "steps": 2}))


def test_t_interval_matches_a_hand_computation():
    iv = t_interval([0.5, 0.6, 0.7])
    # mean 0.6, sd 0.1, t_{0.975, 2} = 4.302653, half-width = 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert iv.mean == pytest.approx(0.6)
    assert iv.half == pytest.approx(0.248414, abs=1e-6)
    assert (iv.lo, iv.hi, iv.n) == (pytest.approx(0.351586, abs=1e-6), pytest.approx(0.848414, abs=1e-6), 3)
    single = t_interval([0.4])
    assert single.n == 1 and math.isnan(single.lo)


def test_paired_test_equals_scipy_ttest_rel():
    same, cross = [0.10, 0.05, 0.08, 0.12], [0.02, 0.04, 0.01, 0.05]
    test = paired_test(same, cross, ["a", "b", "c", "d"])
    ref = stats.ttest_rel(same, cross)
    assert test.p == pytest.approx(ref.pvalue) and test.t == pytest.approx(ref.statistic)
    assert test.diff.mean == pytest.approx(np.mean(np.subtract(same, cross)))
    assert paired_test([0.1], [0.0], ["a"]) is None


def test_ols_slope_on_log2_k_matches_numpy_and_its_interval_uses_n_minus_2_df():
    ks = [2, 2, 4, 4, 8, 8, 16, 16]
    ys = [0.9, 0.85, 0.8, 0.78, 0.7, 0.72, 0.6, 0.65]
    fit = ols_slope(ks, ys)
    slope, intercept = np.polyfit(np.log2(ks), ys, 1)
    assert fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(intercept)
    x = np.log2(ks)
    resid = np.asarray(ys) - (slope * x + intercept)
    se = math.sqrt(resid @ resid / (len(ks) - 2) / ((x - x.mean()) @ (x - x.mean())))
    assert fit.hi - fit.slope == pytest.approx(stats.t.ppf(0.975, len(ks) - 2) * se)
    assert ols_slope([4, 4, 4], [0.1, 0.2, 0.3]) is None  # one value of k: no slope


@pytest.fixture(scope="module")
def study_with_results(tmp_path_factory):
    """The tiny study with synthetic results; one run failed, one missing, one killed halfway (dir, no result)."""
    plan = load_plan(write_study(tmp_path_factory.mktemp("study")))
    rng = np.random.default_rng(0)
    skip = {"finetune/ra-lf1-h1-linear-s1", "transfer/ra-sh6-k6-c1-linear-s1", "distill/ta-to-sb-s1"}
    for run in plan.runs:
        if run.key in skip:
            continue
        labels = run.labels
        if run.stage == "distill":
            base = 0.6 if labels["section"] == "baseline" else 0.6 + (0.08 if labels["same_base"] else 0.02)
            top1 = base + 0.01 * labels["seed"] + rng.normal(0, 0.01)
        elif run.stage == "transfer":
            k = labels["k"]
            top1 = 0.95 - 0.05 * math.log2(k) + rng.normal(0, 0.01)
        else:
            top1 = 0.5 + 0.1 * labels.get("label_fraction", 1) + 0.01 * labels["seed"]
        _write_result(run, top1, k=labels.get("k") or 4, teacher_top1=0.7 if run.stage == "distill" else None)
    record_event(plan, "finetune/ra-lf1-h1-linear-s1", "failed", error="RuntimeError: out of memory")
    plan.get("transfer/ra-sh6-k6-c1-linear-s1").run_dir.mkdir(parents=True)
    return plan


def test_collect_keeps_every_planned_run_with_its_status(study_with_results):
    rows = collect(study_with_results)
    assert len(rows) == len(study_with_results.runs)
    status = {f"{r.stage}/{r.name}": r.status for r in rows}
    assert status["finetune/ra-lf1-h1-linear-s1"] == "failed"
    assert status["transfer/ra-sh6-k6-c1-linear-s1"] == "started"
    assert status["distill/ta-to-sb-s1"] == "missing"
    assert sum(s == "done" for s in status.values()) == len(rows) - 3


@pytest.fixture(scope="module")
def report(study_with_results):
    return write_report(study_with_results)


def test_report_has_all_sections_lists_failed_runs_and_links_runs(study_with_results, report):
    plan, rep = study_with_results, report
    text = rep.path.read_text()
    for heading in ("## 1. Fine-tuning", "## 2. Distillation", "## 3. Transfer", "## Runs without a result"):
        assert heading in text
    for key in ("finetune/ra-lf1-h1-linear-s1", "transfer/ra-sh6-k6-c1-linear-s1", "distill/ta-to-sb-s1"):
        assert key in text.split("## Runs without a result")[1]
    assert "RuntimeError: out of memory" in text
    assert {p.name for p in rep.plots} == {"finetune.png", "distill.png", "transfer.png"}
    assert all(p.stat().st_size > 5000 for p in rep.plots)
    # Each number links its run directory, relative to the report, and the link resolves.
    link = f"[s0]({os.path.relpath(plan.get('finetune/ra-lf0.1-h0-linear-s0').run_dir, rep.path.parent)})"
    assert link in text
    assert (rep.path.parent / os.path.relpath(plan.get('finetune/ra-lf0.1-h0-linear-s0').run_dir,
                                              rep.path.parent)).is_dir()
    # The finetune cell with a failed seed says n=1 instead of inventing an interval.
    assert "| ra | linear | 100% | 1 | 1 | 60.0 (n=1, no CI) |" in text
    with rep.csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(plan.runs)
    assert {r["status"] for r in rows} == {"done", "failed", "started", "missing"}


def test_report_distillation_test_and_transfer_slope_are_the_scipy_numbers(report):
    rep = report
    with rep.csv.open() as fh:
        rows = list(csv.DictReader(fh))
    done = [r for r in rows if r["status"] == "done"]
    base = {(r["student"], r["seed"]): float(r["top1"]) for r in done if r["section"] == "baseline"}
    gains: dict = {}
    for r in done:
        if r["section"] == "distill":
            kind = r["same_base"] == "True"
            gains.setdefault((r["student"], r["seed"]), {}).setdefault(kind, []).append(
                float(r["top1"]) - base[(r["student"], r["seed"])])
    units = sorted(u for u, g in gains.items() if True in g and False in g)
    assert len(units) == 3  # ta-to-sb-s1 is missing, so (sb, s1) has no same-base teacher and drops out
    same = [np.mean(gains[u][True]) for u in units]
    cross = [np.mean(gains[u][False]) for u in units]
    ref = stats.ttest_rel(same, cross)
    assert f"n=3 student-seed pairs, p={ref.pvalue:.3g})" in rep.findings[1]
    assert f"same-base is larger by {100 * np.mean(np.subtract(same, cross)):+.1f} pp" in rep.findings[1]
    text = rep.path.read_text()
    assert f"| {ref.statistic:.2f} | {ref.pvalue:.3g} |" in text
    # Transfer: slope of chance-normalised accuracy on log2 k, recomputed from the CSV with scipy.
    within = [r for r in done if r["kind"] == "within"]
    fit = stats.linregress(np.log2([float(r["k"]) for r in within]), [float(r["chance_norm_top1"]) for r in within])
    half = stats.t.ppf(0.975, len(within) - 2) * fit.stderr
    assert (f"{100 * fit.slope:+.1f} pp per doubling of classes (95% CI [{100 * (fit.slope - half):+.1f}, "
            f"{100 * (fit.slope + half):+.1f}]") in rep.findings[2]
    assert f"n={len(within)} runs" in rep.findings[2]
    assert rep.findings[0].startswith("Fine-tuning:")
