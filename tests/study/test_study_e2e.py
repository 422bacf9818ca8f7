"""End to end: a tiny study through ``simclr-hpc study run`` with the real runner, on submitit's local executor (each
run its own process) and in this process (what ``demo`` uses).

Shards are built, every stage runs in dependency order, the report has all three sections, and a
second ``study run`` redoes nothing.
"""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.study.plan import load_plan
from tests.study.helpers import write_study

TINY_REAL = {
    "name": "e2e",
    "seeds": [0],
    "defaults": {
        "data": {"image_size": 16, "num_workers": 0},
        "model": {"width": 0.125, "proj_hidden_dim": 16, "proj_dim": 16},
        "optim": {"name": "adamw", "base_lr": 0.001, "lr_scaling": "none", "warmup_steps": 0},
        "train": {
            "steps": 2,
            "global_batch": 16,
            "eval_batch_per_device": 256,
            "log_every_steps": 1,
            "ckpt_every_steps": 100,
        },
    },
    "datasets": {"sh4": {"source": "shapes:4:20:16"}, "sh6": {"source": "shapes:6:20:16"}},
    "encoders": {"ra": {"dataset": "sh4", "set": {"model.backbone": "resnet18"}}},
    "finetune": {"encoders": ["ra"], "label_fractions": [0.5], "baselines": []},  # the engine, not the baselines
    "distill": {
        "dataset": "sh4",
        "teachers": {"ta": {"encoder": "ra", "protocol": "linear"}},
        "students": {"sa": {"encoder": "ra"}},
    },
    "transfer": {
        "encoders": ["ra"],
        "images_per_class": 5,
        "baselines": [],
        "within": [{"dataset": "sh6", "num_classes": [2]}],
        "across": ["sh4"],
    },
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "executor",
    [
        pytest.param("local", marks=[pytest.mark.slow]),
        "inprocess",
    ],
)
def test_tiny_study_runs_end_to_end_and_a_second_run_redoes_nothing(tmp_path, monkeypatch, executor):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, TINY_REAL)
    runner = CliRunner()
    result = runner.invoke(app, ["study", "run", str(path), "--executor", executor])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    plan = load_plan(path)
    assert all(run.result_path.is_file() for run in plan.runs)
    report = plan.study_dir / "report" / "report.md"
    text = report.read_text()
    for heading in ("## 1. Fine-tuning", "## 2. Distillation", "## 3. Transfer"):
        assert heading in text
    with (plan.study_dir / "report" / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["status"] for r in rows} == {"done"} and len(rows) == len(plan.runs) == 7
    assert all(0.0 <= float(r["top1"]) <= 1.0 for r in rows if r["stage"] != "pretrain")
    mtimes = {run.key: run.result_path.stat().st_mtime_ns for run in plan.runs}

    again = runner.invoke(app, ["study", "run", str(path), "--executor", executor, "--no-report"])
    assert again.exit_code == 0
    assert f"{len(plan.runs)} already done, 0 to run" in again.output
    assert {run.key: run.result_path.stat().st_mtime_ns for run in plan.runs} == mtimes
