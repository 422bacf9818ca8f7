"""Read every planned run's ``result.json`` into one row per run, and write ``results.csv``.

A row exists for every run of the plan, finished or not: ``status`` is ``done`` (result.json present), ``failed`` (the
engine or the job registry recorded a failure), ``blocked`` (not started because a run it depends on failed), ``queued`` / ``running`` (its job, per the study's job
registry),
``started`` (run directory exists, no result yet: running, killed or pending) or ``missing`` (never started). Nothing is dropped: the report lists every run that is not ``done``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from simclr_hpc.readers import FileError, read_json
from simclr_hpc.study.plan import Plan, RunSpec

COLUMNS = (
    "stage", "name", "status", "section", "kind", "encoder", "base", "seed", "dataset", "label_fraction", "head_layer",
    "protocol", "teacher", "student", "teacher_base", "student_base", "same_base", "k", "class_seed", "top1",
    "chance_norm_top1", "num_classes", "loss", "teacher_top1", "steps", "wall_s", "images_per_s", "world_size",
    "skipped_samples", "config_hash", "stale", "error", "run_dir",
)
EVENTS_FILE = "study-events.jsonl"


def events_path(plan: Plan) -> Path:
    """Where the engine appends one JSON line per submitted, finished or failed run of this study."""
    return plan.study_dir / EVENTS_FILE


def read_events(plan: Plan) -> dict[str, dict]:
    """The latest engine event per run key (``{"key", "event": submitted|done|failed, "error", "time"}``)."""
    path = events_path(plan)
    latest: dict[str, dict] = {}
    if not path.is_file():
        return latest
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed process: the next run's events still count
        if isinstance(event, dict) and "key" in event:
            latest[event["key"]] = event
    return latest


def read_result(path: Path) -> dict | None:
    """A run's result.json, or None when absent or unreadable (it is written atomically, so unreadable = corrupt)."""
    try:
        data = read_json(path, "result.json")
    except FileError:
        return None
    return data if isinstance(data, dict) else None


def read_jobs(plan: Plan, refresh: bool = False) -> dict[str, dict]:
    """The latest job of each run from the study's job registry (``<root>/<study>/registry.sqlite``), if there is one.

    ``refresh`` asks Slurm (squeue/sacct) or the local process table for current states first (``study status``).
    """
    from simclr_hpc.launch import Registry, registry_path

    path = registry_path(plan.study.root, plan.study.name)
    if not path.exists():
        return {}
    registry = Registry(path)
    records = registry.refresh() if refresh else registry.all()
    return {f"{rec.stage}/{rec.run_name}": {"state": rec.state, "job_id": rec.job_id, "stderr": rec.stderr}
            for rec in records}


def run_status(run: RunSpec, events: dict[str, dict], jobs: dict[str, dict] | None = None
               ) -> tuple[str, dict | None, str]:
    """(status, result or None, error text) of one planned run."""
    result = read_result(run.result_path)
    if result is not None:
        return "done", result, ""
    job = (jobs or {}).get(run.key)
    if job and job["state"] in ("PENDING", "SUBMITTED", "REQUEUED", "CONFIGURING"):
        return "queued", None, f"job {job['job_id']} {job['state']}"
    if job and job["state"] in ("RUNNING", "COMPLETING"):
        return "running", None, f"job {job['job_id']} RUNNING"
    if job and job["state"] not in ("COMPLETED",) and job["state"].isupper():
        return "failed", None, f"job {job['job_id']} {job['state']}; log: {job['stderr']}"
    event = events.get(run.key, {})
    if event.get("event") in ("failed", "blocked"):
        return event["event"], None, str(event.get("error", ""))[:300]
    if run.result_path.exists():
        return "failed", None, "result.json exists but cannot be read"
    if run.run_dir.exists():
        return "started", None, ""
    return "missing", None, ""


def collect(plan: Plan, refresh_jobs: bool = False) -> list[dict]:
    """One row per planned run, in plan order, with its study coordinates, status and metrics."""
    events = read_events(plan)
    jobs = read_jobs(plan, refresh_jobs)
    rows = []
    for run in plan.runs:
        status, result, error = run_status(run, events, jobs)
        row = {col: None for col in COLUMNS}
        row.update({key: value for key, value in run.labels.items() if key in COLUMNS})
        row.update(stage=run.stage, name=run.name, status=status, error=error or None, run_dir=str(run.run_dir))
        if result is not None:
            metrics = result.get("metrics") or {}
            for key in ("top1", "chance_norm_top1", "num_classes", "loss", "teacher_top1"):
                row[key] = metrics.get(key)
            for key in ("steps", "wall_s", "images_per_s", "world_size", "skipped_samples", "config_hash"):
                row[key] = result.get(key)
            if row["k"] is None and row["section"] == "transfer":
                row["k"] = row["num_classes"]
            row["stale"] = bool(result.get("config_hash")) and result.get("config_hash") != run.cfg.hash()
        rows.append(row)
    return rows


def not_done(rows: list[dict]) -> list[dict]:
    """Every row whose run has no usable result (failed, started, missing)."""
    return [row for row in rows if row["status"] != "done"]


def write_csv(rows: list[dict], path: Path) -> Path:
    """Write ``results.csv`` (every planned run, one row each) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in COLUMNS})
    tmp.replace(path)
    return path


def summary(rows: list[dict]) -> dict[str, int]:
    """Counts per status: ``{"done": 40, "failed": 1, ...}``."""
    out: dict[str, int] = {}
    for row in rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
    return out
