"""Experiment tracking: TensorBoard event files, W&B offline runs and an MLflow file store, behind one small interface.

The only module that knows ``torch.utils.tensorboard``, ``wandb`` and ``mlflow``. ``metrics.jsonl`` (``metrics.py``) is
always written; ``log.backends`` adds the others. Nothing here goes over the network: W&B runs in offline mode (``wandb
sync <run_dir>/wandb/offline-run-*`` uploads later) and MLflow writes a ``file://`` store.

A run's identity is fixed by its run directory, so a requeued or resumed job continues the same tracked run and never
logs a step twice:

- TensorBoard: events go to ``<run_dir>/tensorboard``; a resumed writer starts with ``purge_step`` = the checkpoint's step
  + 1, and TensorBoard's readers drop the earlier attempt's events from that step on (the re-done steps are logged again).
- W&B: the run id is kept in ``<run_dir>/tracking.json`` and ``resume="allow"``; W&B keeps steps increasing, so a resumed
  job skips the steps the earlier attempt already logged (resume is exact: they had the same values).
- MLflow: the run id is kept in ``tracking.json``; steps already in the store's history are skipped.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Protocol

from simclr_hpc import fsutil, rundir
from simclr_hpc.config import Config, ConfigError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # backend -> import name (= its extra)


class Backend(Protocol):
    """One tracking destination. ``log`` gets a step and flat ``{tag: number}``; ``flush`` makes everything logged so
    far durable (called before each checkpoint, so a checkpoint never exists for steps a backend has lost)."""

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def check_backends(cfg: Config) -> None:
    """Refuse (one line each, before anything is written) a requested backend whose package is not installed."""
    import importlib.util

    missing = [b for b in cfg.log.backends if b in PACKAGES and importlib.util.find_spec(PACKAGES[b]) is None]
    if missing:
        raise ConfigError(
            [
                f"log.backends: {b} is requested but the {PACKAGES[b]} package is not installed; "
                f"pip install 'simclr-hpc[{b}]' or remove {b} from log.backends"
                for b in missing
            ]
        )


def flat_hparams(cfg: Config) -> dict[str, str | int | float | bool]:
    """The resolved config as ``{"optim.base_lr": 0.3, ...}`` with scalar values (lists as their JSON text)."""
    out: dict = {}
    for section, fields in cfg.model_dump(mode="json").items():
        for name, value in fields.items():
            out[f"{section}.{name}"] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return out


class _Identity:
    """``tracking.json`` in the run directory: the ids that make a resumed job continue the same W&B / MLflow run."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / rundir.TRACKING
        self.ids = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str, new) -> tuple[str, bool]:
        """(id, existed): the stored id, or ``new()`` stored now."""
        if key in self.ids:
            return self.ids[key], True
        from simclr_hpc import fsutil

        self.ids[key] = new()
        fsutil.write_json_atomic(self.path, self.ids)
        return self.ids[key], False


class TensorBoard:
    """Event files in ``<run_dir>/tensorboard``; the config as TensorBoard hparams, written once per run."""

    def __init__(self, cfg: Config, run_dir: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        logdir = run_dir / rundir.TENSORBOARD
        earlier = logdir.is_dir() and any(logdir.glob("events.out.tfevents.*"))
        # purge_step makes readers discard the earlier attempt's events at and after it: the re-done steps replace them.
        self.writer = SummaryWriter(str(logdir), purge_step=start_step + 1 if earlier else None)
        if not earlier:
            for summary in hparams(flat_hparams(cfg), {"train/loss": 0.0}):
                self.writer.file_writer.add_summary(summary)

    def log(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _wandb_settings():
    """Offline W&B without what a batch job does not want: no console capture, system stats, git or code snapshots."""
    import wandb

    return wandb.Settings(
        console="off", silent=True, x_disable_stats=True, save_code=False, disable_git=True, x_save_requirements=False
    )


class WandbOffline:
    """A W&B run in offline mode under ``<run_dir>/wandb``, resumed by the id in ``tracking.json``."""

    def __init__(self, cfg: Config, run_dir: Path, stage: str, logged_through: int):
        import wandb

        run_id, _ = _Identity(run_dir).get("wandb_id", lambda: uuid.uuid4().hex[:16])
        self.run = wandb.init(
            project=cfg.run.study,
            group=stage,
            name=f"{stage}/{cfg.run.name}",
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode="offline",
            config=flat_hparams(cfg),
            settings=_wandb_settings(),
        )
        self.logged_through = logged_through

    def log(self, step: int, values: dict[str, float]) -> None:
        if step > self.logged_through:  # W&B keeps steps increasing; re-done steps were logged with the same values
            self.run.log(values, step=step)

    def flush(self) -> None:
        """W&B's offline writer is its own process and has no public flush; nothing to do."""

    def close(self) -> None:
        self.run.finish()


def _mlflow_store(root: str | Path, study: str):
    """(client, experiment id, store path) of the study's MLflow file store ``<root>/<study>/mlruns``; the experiment
    (named after the study) is created when missing."""
    # MLflow 3 keeps its file store but refuses it unless asked: a shared file system is all a cluster job has.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    store = rundir.mlflow_store(root, study).resolve()
    client = MlflowClient(tracking_uri=store.as_uri())
    found = client.get_experiment_by_name(study)
    if found is not None:
        return client, found.experiment_id, store
    try:
        return client, client.create_experiment(study), store
    except MlflowException:  # another job of the study created it between the two calls
        return client, client.get_experiment_by_name(study).experiment_id, store


class MlflowFileStore:
    """An MLflow run in the file store ``<root>/<study>/mlruns`` (experiment = study), resumed by the stored run id."""

    def __init__(self, cfg: Config, run_dir: Path, stage: str):
        from mlflow.entities import Param

        self.client, experiment, _ = _mlflow_store(cfg.run.root, cfg.run.study)
        self.run_id, existed = _Identity(run_dir).get(
            "mlflow_run_id", lambda: self.client.create_run(experiment, run_name=f"{stage}/{cfg.run.name}").info.run_id
        )
        history = self.client.get_metric_history(self.run_id, "train/loss") if existed else []
        self.logged_through = max((m.step for m in history), default=0)
        if not existed:
            params = [Param(k, str(v)) for k, v in flat_hparams(cfg).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, step: int, values: dict[str, float]) -> None:
        if step <= self.logged_through:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def flush(self) -> None:
        """The file store writes synchronously."""

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def open_backends(cfg: Config, run_dir: Path, stage: str, start_step: int, logged_through: int) -> list[Backend]:
    """The backends ``log.backends`` asks for besides jsonl, opened for a run that (re)starts at ``start_step``.

    ``logged_through`` is the last step an earlier attempt logged (``metrics.jsonl`` before it was cut back)."""
    backends: list[Backend] = []
    if "tensorboard" in cfg.log.backends:
        backends.append(TensorBoard(cfg, run_dir, start_step))
    if "wandb" in cfg.log.backends:
        backends.append(WandbOffline(cfg, run_dir, stage, logged_through))
    if "mlflow" in cfg.log.backends:
        backends.append(MlflowFileStore(cfg, run_dir, stage))
    return backends


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
    import shutil

    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    logdir = report_dir / rundir.TENSORBOARD
    shutil.rmtree(logdir, ignore_errors=True)  # the report is rewritten whole; old sessions would double the rows
    with fsutil.writes_under(logdir):  # a full disk: one line naming logdir, not the writer thread's traceback
        for row in done:
            params = {k: row[k] for k in REPORT_KEYS if row.get(k) not in (None, "")}
            metrics = {f"report/{k}": _number(row.get(k)) for k in REPORT_METRICS if _number(row.get(k)) is not None}
            with SummaryWriter(str(logdir / f"{row['stage']}-{row['name']}")) as writer:
                for summary in hparams(params, metrics):
                    writer.file_writer.add_summary(summary)
                for tag, value in metrics.items():
                    writer.add_scalar(tag, value, 0)
        with SummaryWriter(str(logdir)) as writer:
            for path in (p for p in files if p.suffix == ".md"):
                writer.add_text(f"report/{path.stem}", path.read_text(), 0)
    return f"tensorboard: {logdir} ({len(done)} runs; tensorboard --logdir {logdir})"


def _report_mlflow(study: str, root: Path, report_dir: Path, rows: list[dict], files: list[Path]) -> str:
    client, experiment, store = _mlflow_store(root, study)
    run_id, _ = _Identity(report_dir).get(
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
    import wandb

    run_id, _ = _Identity(report_dir).get("wandb_id", lambda: uuid.uuid4().hex[:16])
    run = wandb.init(
        project=study,
        name="report",
        job_type="report",
        id=run_id,
        resume="allow",
        dir=str(report_dir),
        mode="offline",
        settings=_wandb_settings(),
    )
    columns = list(rows[0]) if rows else []
    run.log({"results": wandb.Table(columns=columns, data=[[str(row.get(c, "")) for c in columns] for row in rows])})
    run.finish()
    return f"wandb: offline run {run_id} under {report_dir / rundir.WANDB} (wandb sync it to upload)"
