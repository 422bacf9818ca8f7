"""The study directory: the one owner of the names under ``<root>/<study>/``, as ``rundir.py`` owns a run's.

``<root>/<study>/`` holds:

- ``<stage>/<name>/``: one run directory per run (``run_dir``; its contents: ``rundir.py``).
- ``<stage>/_arrays/<stamp>-<k>/``: submitit's scripts and logs of the k-th Slurm array of a sweep (``array_log_dir``).
- ``<stage>/_lanes/<stamp>-<k>/``: the logs of one worker process of a local array (``lane_log_dir``).
- ``registry.sqlite``: every job submitted for the study (``launch/registry.py``).
- ``study-events.jsonl``: the study engine's log of runs handed out, done, failed or blocked.
- ``data/<dataset>/``: shards a study builds when its file names no other place.
- ``report/``: ``study report``'s default output (``report.md``, ``results.csv``, plots).
- ``mlruns/``: the study's MLflow file store, when runs log to MLflow.

Torch-free and imports nothing of ours: config, launch and study all ask it.
"""

from __future__ import annotations

from pathlib import Path

REGISTRY = "registry.sqlite"
EVENTS = "study-events.jsonl"
DATA = "data"
REPORT = "report"
MLFLOW_STORE = "mlruns"
ARRAYS = "_arrays"
LANES = "_lanes"


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
