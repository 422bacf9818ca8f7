"""Experiment tracking: TensorBoard event files, W&B offline runs and an MLflow file store, behind one small interface.

The only module that knows ``torch.utils.tensorboard``, ``wandb`` and ``mlflow``: a study report's table goes into the
same backends through its writers (``tracking_report.py``). ``metrics.jsonl`` (``metrics.py``) is always written;
``log.backends`` adds the others. Nothing here goes over the network: W&B runs in offline mode (``wandb
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


class TrackingIds:
    """``tracking.json`` in the run directory: the ids that make a resumed job continue the same W&B / MLflow run."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / rundir.TRACKING
        self.ids = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str, new) -> tuple[str, bool]:
        """(id, existed): the stored id, or ``new()`` stored now."""
        if key in self.ids:
            return self.ids[key], True
        self.ids[key] = new()
        fsutil.write_json_atomic(self.path, self.ids)
        return self.ids[key], False


def new_wandb_id() -> str:
    """A fresh W&B run id."""
    return uuid.uuid4().hex[:16]


def summary_writer(
    logdir: Path, params: dict | None = None, metrics: dict | None = None, purge_step: int | None = None
):
    """A TensorBoard ``SummaryWriter`` on ``logdir`` (a context manager too); with ``params``, an HParams session of
    those parameters and ``metrics`` is written first."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    writer = SummaryWriter(str(logdir), purge_step=purge_step)
    if params is not None:
        for summary in hparams(params, metrics):
            writer.file_writer.add_summary(summary)
    return writer


class TensorBoard:
    """Event files in ``<run_dir>/tensorboard``; the config as TensorBoard hparams, written once per run."""

    def __init__(self, cfg: Config, run_dir: Path, start_step: int):
        logdir = run_dir / rundir.TENSORBOARD
        earlier = logdir.is_dir() and any(logdir.glob("events.out.tfevents.*"))
        # purge_step makes readers discard the earlier attempt's events at and after it: the re-done steps replace them.
        if earlier:
            self.writer = summary_writer(logdir, purge_step=start_step + 1)
        else:
            self.writer = summary_writer(logdir, flat_hparams(cfg), {"train/loss": 0.0})

    def log(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wandb_offline_run(run_id: str, directory: Path, **fields):
    """``wandb.init`` of run ``run_id`` in offline mode under ``directory`` (resumed if it exists), without what a batch
    job does not want: no console capture, system stats, git or code snapshots. ``fields``: project, name, ..."""
    import wandb

    settings = wandb.Settings(
        console="off", silent=True, x_disable_stats=True, save_code=False, disable_git=True, x_save_requirements=False
    )
    return wandb.init(id=run_id, resume="allow", dir=str(directory), mode="offline", settings=settings, **fields)


def wandb_table(columns: list[str], data: list[list]):
    """A ``wandb.Table`` (what an offline run logs a results table as)."""
    import wandb

    return wandb.Table(columns=columns, data=data)


class WandbOffline:
    """A W&B run in offline mode under ``<run_dir>/wandb``, resumed by the id in ``tracking.json``."""

    def __init__(self, cfg: Config, run_dir: Path, stage: str, logged_through: int):
        run_id, _ = TrackingIds(run_dir).get("wandb_id", new_wandb_id)
        self.run = wandb_offline_run(
            run_id,
            run_dir,
            project=cfg.run.study,
            group=stage,
            name=f"{stage}/{cfg.run.name}",
            config=flat_hparams(cfg),
        )
        self.logged_through = logged_through

    def log(self, step: int, values: dict[str, float]) -> None:
        if step > self.logged_through:  # W&B keeps steps increasing; re-done steps were logged with the same values
            self.run.log(values, step=step)

    def flush(self) -> None:
        """W&B's offline writer is its own process and has no public flush; nothing to do."""

    def close(self) -> None:
        self.run.finish()


def mlflow_store(root: str | Path, study: str):
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

        self.client, experiment, _ = mlflow_store(cfg.run.root, cfg.run.study)
        self.run_id, existed = TrackingIds(run_dir).get(
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
