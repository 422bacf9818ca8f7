"""A study report's results table into the tracking backends (``simclr-hpc study report --backends``): which backends
(``report_backends``) and the writing (``publish_report``), through ``tracking.py``'s writers, the one module that
imports TensorBoard, W&B and MLflow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from simclr_hpc import fsutil, rundir
from simclr_hpc.config import Config, ConfigError
from simclr_hpc.train.tracking import (
    PACKAGES,
    TrackingIds,
    mlflow_store,
    new_wandb_id,
    summary_writer,
    wandb_offline_run,
    wandb_table,
)

REPORT_KEYS = (
    "section",
    "kind",
    "encoder",
    "base",
    "seed",
    "dataset",
    "label_fraction",
    "head_layer",
    "protocol",
    "teacher",
    "student",
    "k",
    "subset_draw",
)
REPORT_METRICS = ("top1", "chance_norm_top1", "dprime", "loss", "teacher_top1")


def report_backends(requested: str | None, configs: list[Config]) -> list[str]:
    """The backends a study report goes to: ``requested`` (comma-separated; "" for none), or else every backend the
    study's runs log to. Unknown names and missing packages are refused in one line each."""
    if requested is None:
        names = sorted({b for cfg in configs for b in cfg.log.backends if b != "jsonl"})
    else:
        names = [b.strip() for b in requested.split(",") if b.strip()]
    unknown = [b for b in names if b not in PACKAGES]
    if unknown:
        raise ConfigError(f"--backends {requested}: unknown {', '.join(unknown)}; use tensorboard, wandb or mlflow")
    import importlib.util

    missing = [b for b in names if importlib.util.find_spec(PACKAGES[b]) is None]
    if missing:
        raise ConfigError(
            [f"--backends: {b} needs the {PACKAGES[b]} package; pip install 'simclr-hpc[{b}]'" for b in missing]
        )
    return names


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def publish_report(
    backends: list[str], study: str, root: Path, report_dir: Path, rows: list[dict], files: list[Path]
) -> list[str]:
    """Write a study's results table (``results.csv`` rows) into the tracking backends; one line per destination.

    TensorBoard: one HParams session per finished run under ``<report_dir>/tensorboard`` (its study keys as hparams,
    top-1 and loss as metrics) and the report as text. MLflow: a ``report`` run in the study's experiment holding the
    table (``results.json``) and the report files. W&B: an offline ``report`` run with the table as a ``wandb.Table``.
    A report written again replaces its TensorBoard sessions and continues the same MLflow / W&B run."""
    done = [row for row in rows if row.get("status") == "done"]
    written = []
    if "tensorboard" in backends:
        written.append(_report_tensorboard(report_dir, done, files))
    if "mlflow" in backends:
        written.append(_report_mlflow(study, root, report_dir, rows, files))
    if "wandb" in backends:
        written.append(_report_wandb(study, report_dir, rows))
    return written


def _report_tensorboard(report_dir: Path, done: list[dict], files: list[Path]) -> str:
    logdir = report_dir / rundir.TENSORBOARD
    shutil.rmtree(logdir, ignore_errors=True)  # the report is rewritten whole; old sessions would double the rows
    with fsutil.writes_under(logdir):  # a full disk: one line naming logdir, not the writer thread's traceback
        for row in done:
            params = {k: row[k] for k in REPORT_KEYS if row.get(k) not in (None, "")}
            metrics = {f"report/{k}": _number(row.get(k)) for k in REPORT_METRICS if _number(row.get(k)) is not None}
            with summary_writer(logdir / f"{row['stage']}-{row['name']}", params, metrics) as writer:
                for tag, value in metrics.items():
                    writer.add_scalar(tag, value, 0)
        with summary_writer(logdir) as writer:
            for path in (p for p in files if p.suffix == ".md"):
                writer.add_text(f"report/{path.stem}", path.read_text(), 0)
    return f"tensorboard: {logdir} ({len(done)} runs; tensorboard --logdir {logdir})"


def _report_mlflow(study: str, root: Path, report_dir: Path, rows: list[dict], files: list[Path]) -> str:
    client, experiment, store = mlflow_store(root, study)
    run_id, _ = TrackingIds(report_dir).get(
        "mlflow_run_id", lambda: client.create_run(experiment, run_name="report").info.run_id
    )
    columns = list(rows[0]) if rows else []
    client.log_dict(
        run_id, {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}, "results.json"
    )
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return f"mlflow: {store.as_uri()} experiment {study}, run report ({run_id})"


def _report_wandb(study: str, report_dir: Path, rows: list[dict]) -> str:
    run_id, _ = TrackingIds(report_dir).get("wandb_id", new_wandb_id)
    run = wandb_offline_run(run_id, report_dir, project=study, name="report", job_type="report")
    columns = list(rows[0]) if rows else []
    run.log({"results": wandb_table(columns, [[str(row.get(c, "")) for c in columns] for row in rows])})
    run.finish()
    return f"wandb: offline run {run_id} under {report_dir / rundir.WANDB} (wandb sync it to upload)"
