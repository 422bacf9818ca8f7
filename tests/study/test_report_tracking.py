"""`study report --backends`: the study's table in TensorBoard (one HParams session per run), MLflow and W&B."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest
from typer.testing import CliRunner

from simclr_hpc import rundir
from simclr_hpc.cli.main import app
from simclr_hpc.study.plan import load_plan
from tests.study.helpers import write_study

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None


@pytest.fixture
def finished_study(tmp_path):
    """The tiny study with a synthetic result.json for every run but one."""
    path = write_study(tmp_path)
    plan = load_plan(path)
    for i, run in enumerate(plan.runs[:-1]):
        run.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = {
            "top1": 0.5 + i / 100,
            "num_classes": 4,
            "chance_norm_top1": (0.5 + i / 100 - 0.25) / 0.75,
            "loss": 1.0 / (i + 1),
        }
        (run.run_dir / "result.json").write_text(
            json.dumps(
                {
                    "stage": run.stage,
                    "run": run.name,
                    "metrics": metrics,
                    "config_hash": run.cfg.hash(run.stage),
                    "steps": 2,
                }
            )
        )
    return path, plan


def test_study_report_writes_one_tensorboard_session_per_finished_run(finished_study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, plan = finished_study
    result = CliRunner().invoke(app, ["study", "report", str(path), "--backends", "tensorboard"])
    assert result.exit_code == 0, result.output
    report_dir = plan.study_dir / "report"
    with open(report_dir / "results.csv", newline="") as f:
        done = [row for row in csv.DictReader(f) if row["status"] == "done"]
    assert len(done) == len(plan.runs) - 1
    for row in done:
        acc = EventAccumulator(str(report_dir / "tensorboard" / f"{row['stage']}-{row['name']}"))
        acc.Reload()
        assert [(e.step, e.value) for e in acc.Scalars("report/top1")] == [(0, pytest.approx(float(row["top1"])))]
    again = CliRunner().invoke(app, ["study", "report", str(path), "--backends", "tensorboard"])
    assert again.exit_code == 0
    assert len([p for p in (report_dir / "tensorboard").iterdir() if p.is_dir()]) == len(done)  # replaced, not doubled


@pytest.mark.skipif(not (HAS_MLFLOW and HAS_WANDB), reason="needs mlflow and wandb ('simclr-hpc[mlflow,wandb]')")
def test_study_report_writes_the_table_into_mlflow_and_wandb(finished_study, monkeypatch):
    from mlflow.tracking import MlflowClient

    path, plan = finished_study
    result = CliRunner().invoke(app, ["study", "report", str(path), "--backends", "mlflow,wandb"])
    assert result.exit_code == 0, result.output
    report_dir = plan.study_dir / "report"
    ids = json.loads((report_dir / "tracking.json").read_text())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(rundir.mlflow_store(plan.study.root, plan.study.name).resolve().as_uri())
    local = client.download_artifacts(ids["mlflow_run_id"], "results.json")
    table = json.loads(open(local).read())
    assert len(table["data"]) == len(plan.runs) and "top1" in table["columns"]
    assert {a.path for a in client.list_artifacts(ids["mlflow_run_id"])} >= {"results.json", "results.csv", "report.md"}
    assert list(report_dir.glob(f"wandb/offline-run-*-{ids['wandb_id']}/run-{ids['wandb_id']}.wandb"))


def test_unknown_report_backend_is_refused_in_one_line(finished_study):
    path, _ = finished_study
    result = CliRunner().invoke(app, ["study", "report", str(path), "--backends", "tensorbord"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --backends tensorbord: unknown tensorbord; use tensorboard, wandb or mlflow"
    )
