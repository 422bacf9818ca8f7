"""What a run reads, checked before anything is written or submitted: ``check_inputs(stage, cfg)``.

Every run names a shard directory; a fine-tune and a transfer load an encoder run, a distillation a teacher (and maybe
a student's encoder): which, and what else a stage must check, is its row of the task table (``train/task_table.py``).
What the run itself would find out only after writing ``config.yaml`` and ``subset.json`` (an unfinished or missing
run, a teacher that is a pretrain run, a head layer beyond the encoder's head, a checkpoint whose bytes no longer
match its recorded sha256, a teacher trained for another number of classes, unlabelled shards for a stage that needs
labels) is found here, from the files alone: ``result.json``, the last checkpoint's ``meta.json`` and ``state.pt``
hash, and ``index.json``. The runner calls it first thing in every job, so a run whose input run failed fails in
seconds, naming it.

No torch here: ``submit`` calls it on a login node. The checkpoint layout (``checkpoints/latest -> step-N/`` with
``state.pt``, ``meta.json``, ``COMPLETE``) is the one ``simclr_hpc.train.checkpoint`` writes (names from ``rundir``).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from simclr_hpc import rundir
from simclr_hpc.config import BASELINE_ENCODERS, Config, ConfigError, UserError
from simclr_hpc.data.index import DatasetIndex, read_index
from simclr_hpc.data.shard_check import check_shard_files
from simclr_hpc.readers import FileError, read_json
from simclr_hpc.train.task_table import TASKS


@functools.lru_cache(maxsize=256)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """A file's sha256, remembered by (path, size, mtime): a study checks one encoder's checkpoint for each of its
    hundreds of fine-tunes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


def finished_run_arch(ref: str, field: str) -> dict:
    """The ``arch`` record of the finished run ``ref`` (kind, model, head_layers, num_classes), after checking that its
    result and its last checkpoint are whole and untampered. One ConfigError line naming ``field`` otherwise."""
    run = Path(ref)
    if not ref:
        raise ConfigError(f"{field}: empty; set it to the run directory of a finished run")
    if not run.is_dir():
        raise ConfigError(f"{field}: {ref}: no such run directory; run it first or fix the path")
    try:
        result = read_json(rundir.result_path(run), rundir.RESULT)
        latest = (rundir.checkpoints_dir(run) / rundir.LATEST).resolve()
        meta = read_json(latest / "meta.json", "checkpoint meta.json")
    except FileError as err:
        what = "that run has not finished" if not rundir.is_finished(run) else err.lines[0]
        raise ConfigError(f"{field}: {ref}: {what}; run it (again) first or fix the path") from None
    if not isinstance(result, dict) or not isinstance(meta, dict) or not isinstance(meta.get("arch"), dict):
        raise ConfigError(f"{field}: {ref}: result.json or the checkpoint's meta.json is not what a run writes")
    if not (latest / "COMPLETE").exists() or not (latest / "state.pt").is_file():
        raise ConfigError(f"{field}: {ref}: its last checkpoint {latest} is incomplete; run that stage again")
    recorded = meta.get("sha256")
    if _file_sha256(latest / "state.pt") != recorded or result.get("checkpoint_sha256") not in (None, recorded):
        raise ConfigError(
            f"{field}: {ref}: checkpoint {latest} does not match the sha256 recorded when it was written "
            "(modified or corrupt); restore it or run that stage again"
        )
    return meta["arch"]


def _index(cfg: Config) -> DatasetIndex:
    """The config's shard index (``data/index.py``); a problem is one ConfigError line naming ``data.shards``."""
    try:
        return read_index(cfg.data.shards)
    except UserError as err:
        raise ConfigError([f"data.shards: {line}" for line in err.lines]) from None


def _need_split(index: DatasetIndex, cfg: Config, split: str, field: str) -> None:
    if split not in index.splits:
        have = ", ".join(index.splits) or "none"
        raise ConfigError(f"{field}: split {split!r} is not in {cfg.data.shards} (splits: {have})")


_KIND = {"classifier": "a fine-tune run", "simclr": "a pretrain run"}


def _input_archs(entry, cfg: Config) -> dict[str, dict]:
    """The arch of each finished run the stage loads (``entry.inputs``), each checked whole and of the right kind."""
    archs = {}
    for item in entry.inputs:
        ref = item.value(cfg)
        if (item.optional and not ref) or (item.baselines and ref in BASELINE_ENCODERS):
            continue
        arch = finished_run_arch(ref, item.field)
        if item.kind and arch.get("kind") != item.kind:
            raise ConfigError(
                f"{item.field}: {ref} is {_KIND.get(arch.get('kind'), arch.get('kind'))}; it must be "
                f"{_KIND.get(item.kind, item.kind)}"
            )
        archs[item.field] = arch
    return archs


def check_inputs(
    stage: str, cfg: Config, runs_may_be_pending: bool = False, shards_may_be_pending: bool = False
) -> DatasetIndex | None:
    """Everything ``stage`` with ``cfg`` reads, as one ConfigError line at the first problem; returns the shards'
    index (None when not read). What the stage needs is its row of the task table (``train/task_table.py``).

    ``runs_may_be_pending``: the runs it loads are still to come (a submit with ``--dependency``): they are not checked.
    ``shards_may_be_pending``: the shards are still to be built (a study builds them before it submits): not checked.
    """
    entry = TASKS[stage]
    index = None
    if not shards_may_be_pending:
        index = _index(cfg)
        # Labels first: shards without them cannot serve the stage whatever their splits (unlabeled shards have only
        # train, so a split line would hide the real problem).
        if entry.needs_labels and not index.labelled:
            raise ConfigError(
                f"data.shards: {cfg.data.shards} holds unlabeled images ({index.source}) and {stage} "
                "needs labels; point data.shards at labelled shards (cifar10:, imagefolder:, npz:, ...) "
                "or run pretrain on these"
            )
        if entry.needs_labels and index.num_classes < 2:
            raise ConfigError(
                f"data.shards: {cfg.data.shards} has {index.num_classes} class "
                f"({', '.join(index.classes)}) and {stage} needs at least 2 (a classifier of one class is "
                "right by definition); use data with two classes or more"
            )
        # The tars agree with index.json, before anything is written (their contents too, unless damage is skipped).
        check_shard_files(index, contents=cfg.data.on_error == "raise")
        _need_split(index, cfg, cfg.data.train_split, "data.train_split")
        if entry.evaluates:
            _need_split(index, cfg, cfg.data.eval_split, "data.eval_split")
    archs = {} if runs_may_be_pending else _input_archs(entry, cfg)
    if entry.check is not None and not runs_may_be_pending:
        entry.check(cfg, index, archs)
    return index


def input_hashes(stage: str, cfg: Config) -> dict[str, str]:
    """What a ``stage`` run with ``cfg`` reads, by content: ``data`` (the shards' index.json content hash) and the
    recorded sha256 of the last checkpoint of each run it loads (its task-table inputs, by field: ``finetune.encoder``,
    ``distill.teacher``, ...). A key is absent when that input is (a baseline encoder, no teacher, shards not built)."""
    out: dict[str, str] = {}
    try:
        index = read_json(Path(cfg.data.shards) / "index.json", "shard index")
        if isinstance(index, dict) and isinstance(index.get("content_hash"), str):
            out["data"] = index["content_hash"]
    except FileError:
        pass
    for item in TASKS[stage].inputs:
        ref = item.value(cfg)
        if not ref or ref in BASELINE_ENCODERS:
            continue
        try:
            meta = read_json((rundir.checkpoints_dir(ref) / rundir.LATEST).resolve() / "meta.json", "meta.json")
        except FileError:
            continue
        if isinstance(meta, dict) and isinstance(meta.get("sha256"), str):
            out[item.field] = meta["sha256"]
    return out


def changed_inputs(recorded: dict, now: dict) -> list[str]:
    """The inputs whose content differs between a finished run's record and now (an input gone now is not "changed":
    the record is all that is left of it)."""
    return [
        f"{name} {recorded[name][:12]} -> {now[name][:12]}"
        for name in sorted(recorded)
        if name in now and recorded[name] != now[name]
    ]
