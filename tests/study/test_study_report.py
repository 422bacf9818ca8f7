"""Aggregation and report on synthetic result.json files: CI math, the per-seed slope, failed runs listed, and the
verdicts recomputed from results.csv with scipy."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from simclr_hpc.study.aggregate import collect
from simclr_hpc.study.pipeline import record_event
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.report import write_report
from simclr_hpc.study.stats import log2_slope, t_interval
from tests.study.helpers import write_study


def _write_result(run, top1: float, k: int = 4, **metrics) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    m = {"top1": top1, "num_classes": k, "chance_norm_top1": (top1 - 1 / k) / (1 - 1 / k), "loss": 0.5, **metrics}
    (run.run_dir / "result.json").write_text(
        json.dumps(
            {"stage": run.stage, "run": run.name, "metrics": m, "config_hash": run.cfg.hash(run.stage), "steps": 2}
        )
    )


def test_t_interval_matches_a_hand_computation():
    iv = t_interval([0.5, 0.6, 0.7])
    # mean 0.6, sd 0.1, t_{0.975, 2} = 4.302653, half-width = 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert iv.mean == pytest.approx(0.6)
    assert iv.half == pytest.approx(0.248414, abs=1e-6)
    assert (iv.lo, iv.hi, iv.n) == (pytest.approx(0.351586, abs=1e-6), pytest.approx(0.848414, abs=1e-6), 3)
    single = t_interval([0.4])
    assert single.n == 1 and math.isnan(single.lo)


def test_log2_slope_matches_numpy_polyfit():
    ks = [2, 2, 4, 4, 8, 8, 16, 16]
    ys = [0.9, 0.85, 0.8, 0.78, 0.7, 0.72, 0.6, 0.65]
    assert log2_slope(ks, ys) == pytest.approx(np.polyfit(np.log2(ks), ys, 1)[0])
    assert math.isnan(log2_slope([4, 4, 4], [0.1, 0.2, 0.3]))  # one value of k: no slope


@pytest.fixture(scope="module")
def study_with_results(tmp_path_factory):
    """The tiny study with synthetic results; one run failed, one missing, one killed halfway (dir, no result)."""
    plan = load_plan(write_study(tmp_path_factory.mktemp("study")))
    rng = np.random.default_rng(0)
    skip = {"finetune/ra-lf1-h1-linear-s1", "transfer/ra-sh6-k3-d1-linear-s1", "distill/ta-to-sb-lf0.1-s1"}
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
    plan.get("transfer/ra-sh6-k3-d1-linear-s1").run_dir.mkdir(parents=True)
    return plan


def test_collect_keeps_every_planned_run_with_its_status(study_with_results):
    rows = collect(study_with_results)
    assert len(rows) == len(study_with_results.runs)
    status = {f"{r.stage}/{r.name}": r.status for r in rows}
    assert status["finetune/ra-lf1-h1-linear-s1"] == "failed"
    assert status["transfer/ra-sh6-k3-d1-linear-s1"] == "started"
    assert status["distill/ta-to-sb-lf0.1-s1"] == "missing"
    assert sum(s == "done" for s in status.values()) == len(rows) - 3


@pytest.fixture(scope="module")
def report(study_with_results):
    return write_report(study_with_results)


def test_report_has_all_sections_lists_failed_runs_and_links_runs(study_with_results, report):
    plan, rep = study_with_results, report
    text = rep.path.read_text()
    for heading in ("## 1. Fine-tuning", "## 2. Distillation", "## 3. Transfer", "## Runs without a result"):
        assert heading in text
    for key in ("finetune/ra-lf1-h1-linear-s1", "transfer/ra-sh6-k3-d1-linear-s1", "distill/ta-to-sb-lf0.1-s1"):
        assert key in text.split("## Runs without a result")[1]
    assert "RuntimeError: out of memory" in text
    assert {p.name for p in rep.plots} == {"finetune.png", "distill.png", "transfer.png"}
    assert all(p.stat().st_size > 5000 for p in rep.plots)
    # Each number links its run directory, relative to the report, and the link resolves.
    link = f"[s0]({os.path.relpath(plan.get('finetune/ra-lf0.1-h0-linear-s0').run_dir, rep.path.parent)})"
    assert link in text
    assert (
        rep.path.parent / os.path.relpath(plan.get("finetune/ra-lf0.1-h0-linear-s0").run_dir, rep.path.parent)
    ).is_dir()
    # The finetune cell with a failed seed says n=1 instead of inventing an interval.
    assert "| linear | ra | 100% | 1 | n/a | 1 | 60.0 (n=1, no CI) |" in text  # synthetic results record no eval size
    with rep.csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(plan.runs)
    assert {r["status"] for r in rows} == {"done", "failed", "started", "missing"}


def test_report_verdicts_are_scipys_tests_of_the_per_seed_values_in_results_csv(report):
    rep = report
    with rep.csv.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "done"]
    verdicts = (rep.path.parent / "verdicts.md").read_text().splitlines()[2:]
    # Distillation: per seed, the mean over students of (same-base gain - mean cross-base gain); n = 2 seeds.
    base = {(r["student"], r["seed"]): float(r["top1"]) for r in rows if r["section"] == "baseline"}
    per_seed: dict = {}
    for student, seed in base:
        gains = [
            (r["same_base"] == "True", float(r["top1"]) - base[(student, seed)])
            for r in rows
            if r["section"] == "distill" and (r["student"], r["seed"]) == (student, seed)
        ]
        same, cross = [g for s, g in gains if s], [g for s, g in gains if not s]
        if same and cross:  # (sb, s1) lost its same-base teacher: that student drops out of seed 1
            per_seed.setdefault(seed, []).append(np.mean(same) - np.mean(cross))
    values = [np.mean(v) for _, v in sorted(per_seed.items())]
    ci = stats.ttest_1samp(values, 0).confidence_interval(0.95)
    row = next(line for line in verdicts if line.startswith("| distillation"))
    assert f"{100 * np.mean(values):+.1f} [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}] pp | 2 seeds" in row
    assert "**inconclusive**" in row  # 2 seeds: by rule
    # Transfer: per seed, the slope on log2 k of d' averaged over the seed's subset draws at each k.
    within = [r for r in rows if r["kind"] == "within" and not r["baseline"]]
    slopes = []
    for seed in sorted({r["seed"] for r in within}):
        by_k = {}
        for r in (r for r in within if r["seed"] == seed):
            by_k.setdefault(float(r["k"]), []).append(float(r["dprime"]))
        slopes.append(np.polyfit(np.log2(list(by_k)), [np.mean(v) for v in by_k.values()], 1)[0])
    ci = stats.ttest_1samp(slopes, 0).confidence_interval(0.95)
    row = next(line for line in verdicts if line.startswith("| transfer"))
    assert f"{np.mean(slopes):+.2f} [{ci.low:+.2f}, {ci.high:+.2f}] d' per doubling | 2 seeds" in row
    assert rep.headline[0].startswith("- **inconclusive**: fine-tuning from projection-head layer 1")
