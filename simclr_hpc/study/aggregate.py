"""Read every planned run's ``result.json`` into one row per run, and write ``results.csv``.

A row exists for every run of the plan, finished or not: ``status`` is ``done`` (result.json present), ``failed`` (the
engine or the job registry recorded a failure), ``blocked`` (not started because a run it depends on failed),
``queued`` / ``running`` (its job, per the study's job registry), ``started`` (run directory exists, no result yet: running, killed or pending) or ``missing`` (never started). Nothing
is dropped: the report lists every run that is not ``done``. A row is a typed :class:`Row`; its fields are the CSV's
columns.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from simclr_hpc import fsutil, rundir
from simclr_hpc.study.runs import Plan, RunSpec


@dataclass
class Row:
    """One planned run in the study's results: where it sits in the study, its status and its metrics (None = unknown).

    Field order is the column order of ``results.csv``.
    """

    stage: str
    name: str
    status: str
    """done, failed, blocked, queued, running, started or missing (see the module docstring)."""
    section: str | None = None
    """pretrain, student_init (a distillation student's encoder, pretrained under another seed), finetune, teacher,
    baseline, distill or transfer: which analysis of the report the run belongs to."""
    kind: str | None = None
    """Transfer: ``within`` (k-class subsets of one dataset) or ``across`` (whole datasets)."""
    encoder: str | None = None
    """The study's encoder name, or a baseline: ``random`` or ``pixels``."""
    baseline: str | None = None
    """``random`` or ``pixels`` for a baseline run, None otherwise."""
    arch: str | None = None
    """Fine-tune and transfer: the encoder's architecture key (a random baseline matches the runs that share it)."""
    base: str | None = None
    seed: int | None = None
    """The replicate the run belongs to (the study's seed; a student_init run is pretrained with 1000 + it)."""
    dataset: str | None = None
    label_fraction: float | None = None
    head_layer: int | None = None
    protocol: str | None = None
    teacher: str | None = None
    student: str | None = None
    teacher_base: str | None = None
    student_base: str | None = None
    same_base: bool | None = None
    student_init: str | None = None
    """Distillation: ``random`` or ``pretrained`` (the student's encoder under seed 1000 + seed)."""
    k: int | None = None
    """Transfer: number of classes."""
    subset_draw: int | None = None
    """Transfer within a dataset: which nested draw of class subsets of this seed (``data/subsets.class_order``)."""
    top1: float | None = None
    """Top-1 accuracy as a fraction."""
    chance_norm_top1: float | None = None
    """``(top1 - 1/k) / (1 - 1/k)``: 0 = chance, 1 = perfect (descriptive: it falls with k by itself)."""
    dprime: float | None = None
    """d' of the top-1 under the equal-variance model of a k-way choice (``separability.py``): constant in k when
    every class pair is equally separable; computed here from top1, num_classes and eval_images."""
    num_classes: int | None = None
    eval_images: int | None = None
    """Size of the evaluation set the accuracies were measured on."""
    top5: float | None = None
    """Top-5 accuracy (only with more than 5 classes)."""
    knn_top1_k20: float | None = None
    """kNN top-1 (cosine, k = 20, exp(s/0.07) votes) on the frozen features; pretrain: the monitor's, on its queries."""
    knn_top1_k200: float | None = None
    probe_epochs: float | None = None
    """Linear probe: passes over the labelled set."""
    probe_train_loss: float | None = None
    """Linear probe: final cross-entropy on the whole labelled set."""
    probe_penalty: float | None = None
    """Linear probe: the L2 penalty it chose on the validation split (``train/probe.py``)."""
    alignment: float | None = None
    """Pretrain (monitor): alignment of the final encoder's projections (Wang & Isola 2020; lower is better)."""
    uniformity: float | None = None
    """Pretrain (monitor): uniformity, t = 2 (0 = collapsed; lower is better)."""
    alignment_h: float | None = None
    """Pretrain (monitor): alignment of the final encoder's outputs h, the features a linear probe reads."""
    uniformity_h: float | None = None
    """Pretrain (monitor): uniformity of h (t = 2)."""
    embed_std: float | None = None
    """Pretrain (monitor): std of the normalised projections, averaged over dimensions (0 = collapsed)."""
    positive_rank1: float | None = None
    """Pretrain (monitor): how often a view's nearest other view is its positive."""
    monitor_s_total: float | None = None
    """Pretrain: seconds spent monitoring (its share of ``wall_s`` is the monitor's cost)."""
    loss: float | None = None
    teacher_top1: float | None = None
    steps: int | None = None
    wall_s: float | None = None
    images_per_s: float | None = None
    world_size: int | None = None
    skipped_samples: int | None = None
    config_hash: str | None = None
    stale: bool | None = None
    """The result was made with a different config than the study now asks for."""
    error: str | None = None
    run_dir: str = ""

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.name}"


COLUMNS = tuple(f.name for f in fields(Row))
RESULT_METRICS = (
    "top1",
    "chance_norm_top1",
    "num_classes",
    "eval_images",
    "top5",
    "knn_top1_k20",
    "knn_top1_k200",
    "probe_epochs",
    "probe_train_loss",
    "probe_penalty",
    "alignment",
    "uniformity",
    "alignment_h",
    "uniformity_h",
    "embed_std",
    "positive_rank1",
    "monitor_s_total",
    "loss",
    "teacher_top1",
)
"""Keys of a result's ``metrics`` copied into its row."""
RESULT_FACTS = ("steps", "wall_s", "images_per_s", "world_size", "skipped_samples", "config_hash")
"""Top-level keys of a result copied into its row."""
DEFAULT_EVAL_IMAGES = 1000
"""Eval-set size assumed for a result that does not record one (results older than ``eval_images``)."""


def events_path(plan: Plan) -> Path:
    """Where the engine appends one JSON line per submitted, finished or failed run of this study."""
    return rundir.events_path(plan.study.root, plan.study.name)


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
    return rundir.read_result_json(path)


def read_jobs(plan: Plan, refresh: bool = False) -> dict[str, dict]:
    """The latest job of each run from the study's job registry (``<root>/<study>/registry.sqlite``), if there is one.

    ``refresh`` asks Slurm (squeue/sacct) or the local process table for current states first (``study status``).
    """
    from simclr_hpc import launch

    path = launch.registry_path(plan.study.root, plan.study.name)
    if not path.exists():
        return {}
    registry = launch.Registry(path)
    records = launch.refresh(registry) if refresh else registry.all()
    return {
        f"{rec.stage}/{rec.run_name}": {
            "state": rec.state,
            "job_id": rec.job_id,
            "stderr": rec.stderr,
            "reason": rec.reason,
        }
        for rec in records
    }


def run_status(
    run: RunSpec, events: dict[str, dict], jobs: dict[str, dict] | None = None
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
        why = f": {job['reason']}" if job.get("reason") else ""
        log = f"; log: {job['stderr']}" if job.get("stderr") else ""
        return "failed", None, f"job {job['job_id']} {job['state']}{why}{log}"
    event = events.get(run.key, {})
    if event.get("event") in ("failed", "blocked"):
        return event["event"], None, str(event.get("error", ""))[:300]
    if run.result_path.exists():
        return "failed", None, "result.json exists but cannot be read"
    if run.run_dir.exists():
        return "started", None, ""
    return "missing", None, ""


def collect(plan: Plan, refresh_jobs: bool = False) -> list[Row]:
    """One row per planned run, in plan order, with its study coordinates, status and metrics."""
    events = read_events(plan)
    jobs = read_jobs(plan, refresh_jobs)
    return [_row(run, *run_status(run, events, jobs)) for run in plan.runs]


def _row(run: RunSpec, status: str, result: dict | None, error: str) -> Row:
    labels = {key: value for key, value in run.labels.items() if key in COLUMNS}
    row = Row(stage=run.stage, name=run.name, status=status, error=error or None, run_dir=str(run.run_dir), **labels)
    if result is None:
        return row
    metrics = result.get("metrics") or {}
    row = replace(
        row, **{key: metrics.get(key) for key in RESULT_METRICS}, **{key: result.get(key) for key in RESULT_FACTS}
    )
    if row.k is None and row.section == "transfer":
        row.k = row.num_classes
    if row.top1 is not None and (row.num_classes or 0) >= 2:
        from simclr_hpc.study.separability import dprime

        row.dprime = float(dprime(row.top1, row.num_classes, row.eval_images or DEFAULT_EVAL_IMAGES)[0])
    row.stale = bool(result.get("config_hash")) and result.get("config_hash") != run.cfg.hash(run.stage)
    return row


def not_done(rows: list[Row]) -> list[Row]:
    """Every row whose run has no usable result (failed, started, missing)."""
    return [row for row in rows if row.status != "done"]


def write_csv(rows: list[Row], path: Path) -> Path:
    """Write ``results.csv`` (every planned run, one row each) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in asdict(row).items()})
    return path


def summary(rows: list[Row]) -> dict[str, int]:
    """Counts per status: ``{"done": 40, "failed": 1, ...}``."""
    out: dict[str, int] = {}
    for row in rows:
        out[row.status] = out.get(row.status, 0) + 1
    return out
