"""The names under a run root, owned here alone: the study directory ``<root>/<study>/``, each run directory in it,
and the reader and writer of a run's ``result.json``.

``<root>/<study>/`` (``study_dir``) holds:

- ``<stage>/<name>/``: one run directory per run (``run_dir``; its contents below).
- ``<stage>/_arrays/<stamp>-<k>/``: submitit's scripts and logs of the k-th Slurm array of a sweep (``array_log_dir``).
- ``<stage>/_lanes/<stamp>-<k>/``: the logs of one worker process of a local array (``lane_log_dir``).
- ``registry.sqlite``: every job submitted for the study (``registry_path``; ``launch/registry.py``).
- ``study-events.jsonl``: the study pipeline's log of runs handed out, done, failed or blocked (``events_path``).
- ``data/<dataset>/``: shards a study builds when its file names no other place (``data_dir``).
- ``report/``: ``study report``'s default output (``report.md``, ``results.csv``, plots; ``report_dir``).
- ``mlruns/``: the study's MLflow file store, when runs log to MLflow (``mlflow_store``).

``<root>/<study>/<stage>/<name>/`` (``Config.run_dir(stage)``) holds:

- ``config.yaml``: the resolved config, written before the first step; a resume with a different one is refused.
- ``config.submitted.yaml``: the config as submitted (written by ``submit`` before the job starts).
- ``metrics.jsonl``: one JSON line per logged step.
- ``checkpoints/step-NNNNNNNN/`` and ``checkpoints/latest``: whole checkpoints (see ``train/checkpoint.py``).
- ``subset.json``: the labelled training keys and label map of a fine-tune or transfer run.
- ``result.json``: written last, atomically; its presence is what "finished" means everywhere.
- ``tensorboard/``, ``wandb/``, ``tracking.json``: TensorBoard event files, offline W&B runs, and the W&B / MLflow run
  ids that make a resumed job continue the same tracked run (``train/tracking.py``).
- ``export/``: what ``simclr-hpc export`` writes when no ``--out`` is given.

Torch-free (a login node's ``status`` and ``study report`` read results without importing torch); config, launch and
study all ask it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simclr_hpc import fsutil
from simclr_hpc.readers import FileError, read_json

# In the study directory, <root>/<study>/.
REGISTRY = "registry.sqlite"
EVENTS = "study-events.jsonl"
DATA = "data"
REPORT = "report"
MLFLOW_STORE = "mlruns"
ARRAYS = "_arrays"
LANES = "_lanes"

# In a run directory, <root>/<study>/<stage>/<name>/.
CONFIG = "config.yaml"
SUBMITTED_CONFIG = "config.submitted.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
SUBSET = "subset.json"
RESULT = "result.json"
TRACKING = "tracking.json"
TENSORBOARD = "tensorboard"
WANDB = "wandb"
EXPORT = "export"


def study_dir(root: str | Path, study: str) -> Path:
    """``<root>/<study>``."""
    return Path(root) / study


def run_dir(root: str | Path, study: str, stage: str, name: str) -> Path:
    """``<root>/<study>/<stage>/<name>``: where one run writes everything."""
    return study_dir(root, study) / stage / name


def registry_path(root: str | Path, study: str) -> Path:
    """``<root>/<study>/registry.sqlite``."""
    return study_dir(root, study) / REGISTRY


def events_path(root: str | Path, study: str) -> Path:
    """``<root>/<study>/study-events.jsonl``."""
    return study_dir(root, study) / EVENTS


def data_dir(root: str | Path, study: str, dataset: str) -> Path:
    """``<root>/<study>/data/<dataset>``: a dataset's shards when the study file gives no other place."""
    return study_dir(root, study) / DATA / dataset


def report_dir(root: str | Path, study: str) -> Path:
    """``<root>/<study>/report``."""
    return study_dir(root, study) / REPORT


def mlflow_store(root: str | Path, study: str) -> Path:
    """``<root>/<study>/mlruns``: the study's MLflow file store, beside its runs."""
    return study_dir(root, study) / MLFLOW_STORE


def array_log_dir(root: str | Path, study: str, stage: str, stamp: str, k: int) -> Path:
    """``<root>/<study>/<stage>/_arrays/<stamp>-<k>``: the k-th Slurm array of a sweep submitted at ``stamp``."""
    return study_dir(root, study) / stage / ARRAYS / f"{stamp}-{k}"


def lane_log_dir(root: str | Path, study: str, stage: str, stamp: str, k: int) -> Path:
    """``<root>/<study>/<stage>/_lanes/<stamp>-<k>``: the logs of worker process k of a local array."""
    return study_dir(root, study) / stage / LANES / f"{stamp}-{k}"


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def submitted_config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SUBMITTED_CONFIG


def metrics_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def subset_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SUBSET


def result_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESULT


def is_finished(run_dir: str | Path) -> bool:
    """The run wrote its result (the runner writes it last and atomically, so a present file is a whole one)."""
    return result_path(run_dir).is_file()


@dataclass(frozen=True)
class Result:
    """A finished run's ``result.json``: what the runner writes and what the study's aggregation reads.

    ``metrics`` holds what evaluation measured (``top1``, ``chance_norm_top1``, ``num_classes``, ``eval_images``; a
    distillation adds ``teacher_top1`` and ``teacher_backbone``) and the final training ``loss``. Fields a writer did
    not record are None and left out of the JSON; keys this class does not know are kept in ``extra`` and written back.
    """

    stage: str
    run: str
    metrics: dict[str, Any] = field(default_factory=dict)
    study: str | None = None
    run_dir: str | None = None
    config_hash: str | None = None
    """``Config.hash(stage)`` of the run: compared with the config a study plans now to flag stale results."""
    data_hash: str | None = None
    """Content hash of the shards (``index.json``) the run trained on: a study tells results of replaced data by it."""
    inputs_sha256: dict[str, str] | None = None
    """sha256 of the checkpoint of each run it read (``encoder``, ``teacher``, ``student_init``): a finished run whose
    inputs were replaced since is refused, never answered with its old result (``runner.finished_result``)."""
    seed: int | None = None
    steps: int | None = None
    global_batch: int | None = None
    per_device_batch: int | None = None
    accumulation: int | None = None
    wall_s: float | None = None
    """Seconds from the start of ``run_stage`` to the result (setup, training, evaluation, checkpoints)."""
    images_per_s: float | None = None
    """Training images per second over all ranks (evaluation and checkpoints excluded)."""
    skipped_samples: int | None = None
    """Corrupt samples skipped with ``data.on_error=skip``, summed over ranks."""
    device: str | None = None
    world_size: int | None = None
    hostnames: list[str] | None = None
    checkpoint_sha256: str | None = None
    finished_at: str | None = None
    num_classes: int | None = None
    """Classes of the classifier (fine-tune, transfer, distill)."""
    train_images: int | None = None
    """Labelled training images of a fine-tune or transfer run."""
    labelled_images: int | None = None
    """Images whose labels a distillation's label loss may see."""
    precision: str | None = None
    """What ``train.precision`` resolved to on the run's device: bf16, fp16 or fp32."""
    amp_skipped_steps: int | None = None
    """fp16: optimizer steps skipped because the scaled gradients overflowed."""
    label_subset_sha256: str | None = None
    """sha256 of the ``finetune.label_subset_file`` that chose the labelled images (a fine-tune run given one)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def top1(self) -> float | None:
        return self.metrics.get("top1")

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` mapping: every recorded field at the top level, as the runner has always written it."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out = {key: value for key, value in out.items() if value is not None}
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Result":
        """The inverse of :meth:`to_json` (unknown keys go to ``extra``)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in data.items() if key in known}
        kwargs.setdefault("stage", "")
        kwargs.setdefault("run", "")
        return cls(**kwargs, extra={key: value for key, value in data.items() if key not in known})

    @classmethod
    def read(cls, run_dir: str | Path) -> "Result | None":
        """The result of the run at ``run_dir``, or None when it has none or it cannot be read (it is written
        atomically, so an unreadable one is corrupt, not half-written)."""
        data = read_result_json(result_path(run_dir))
        return None if data is None else cls.from_json(data)

    def write(self, run_dir: str | Path) -> Path:
        """Write ``result.json`` into ``run_dir`` atomically; returns its path."""
        path = result_path(run_dir)
        fsutil.write_json_atomic(path, self.to_json())
        return path


def read_result_json(path: str | Path) -> dict | None:
    """The mapping in the ``result.json`` at ``path``, or None when absent, unreadable or not a mapping."""
    try:
        data = read_json(path, "result.json")
    except FileError:
        return None
    return data if isinstance(data, dict) else None
