"""The runs and shards a config refers to, checked before anything is written or submitted.

A fine-tune names an encoder run, a distillation a teacher (and maybe a student's encoder), a transfer an encoder; every
run names a shard directory. What the run itself would find out only after writing ``config.yaml`` and ``subset.json``
(an unfinished or missing run, a teacher that is a pretrain run, a head layer beyond the encoder's head, a checkpoint
whose bytes no longer match its recorded sha256, a teacher trained for another number of classes) is found here, from
the files alone: ``result.json``, the last checkpoint's ``meta.json`` and ``state.pt`` hash, and ``index.json``.

No torch here: ``submit`` calls it on a login node. The checkpoint layout (``checkpoints/latest -> step-N/`` with
``state.pt``, ``meta.json``, ``COMPLETE``) is the one ``simclr_hpc.train.checkpoint`` writes (names from ``rundir``).
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from simclr_hpc import rundir
from simclr_hpc.config import BASELINE_ENCODERS, Config, ConfigError
from simclr_hpc.readers import FileError, read_json


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    if _sha256(latest / "state.pt") != recorded or result.get("checkpoint_sha256") not in (None, recorded):
        raise ConfigError(f"{field}: {ref}: checkpoint {latest} does not match the sha256 recorded when it was written "
                          "(modified or corrupt); restore it or run that stage again")
    return meta["arch"]


def _index(cfg: Config) -> dict:
    """``index.json`` of the config's shards, with the splits the run reads; a problem is one ConfigError line."""
    root = Path(cfg.data.shards)
    build = f"build it with `simclr-hpc data shards SOURCE {shlex.quote(str(root))}`"
    if not root.is_dir():
        raise ConfigError(f"data.shards: {root}: shard directory not found; {build}")
    try:
        index = read_json(root / "index.json", "shard index")
    except FileError as err:
        raise ConfigError(f"data.shards: {err.lines[0]}; {build}") from None
    if not isinstance(index, dict) or not isinstance(index.get("splits"), dict) or \
            not isinstance(index.get("classes"), list):
        raise ConfigError(f"data.shards: {root / 'index.json'}: not a shard index; {build}")
    return index


def _need_split(index: dict, cfg: Config, split: str, field: str) -> None:
    if split not in index["splits"]:
        have = ", ".join(index["splits"]) or "none"
        raise ConfigError(f"{field}: split {split!r} is not in {cfg.data.shards} (splits: {have})")


def check_references(stage: str, cfg: Config, runs_may_be_pending: bool = False) -> None:
    """Everything ``stage`` with ``cfg`` refers to, as one ConfigError line. ``runs_may_be_pending``: the referenced
    runs are still to come (a submit with ``--dependency``): only the shards are checked."""
    index = _index(cfg)
    _need_split(index, cfg, cfg.data.train_split, "data.train_split")
    if stage != "pretrain":
        _need_split(index, cfg, cfg.data.eval_split, "data.eval_split")
    if runs_may_be_pending:
        return
    if stage in ("finetune", "transfer"):
        section = cfg.finetune if stage == "finetune" else cfg.transfer
        if section.encoder not in BASELINE_ENCODERS:
            arch = finished_run_arch(section.encoder, f"{stage}.encoder")
            layers = int(arch.get("model", {}).get("proj_layers", 0)) if arch.get("kind") == "simclr" else 0
            if stage == "finetune" and cfg.finetune.from_head_layer > layers:
                raise ConfigError(f"finetune.from_head_layer: {cfg.finetune.from_head_layer} but the encoder's "
                                  f"projection head has {layers} layer(s); use 0..{layers}")
    elif stage == "distill":
        d = cfg.distill
        if d.teacher:
            arch = finished_run_arch(d.teacher, "distill.teacher")
            if arch.get("kind") != "classifier":
                raise ConfigError(f"distill.teacher: {d.teacher} is a {arch.get('kind')} (pretrain) run; a teacher "
                                  "must be a fine-tune run")
            if arch.get("num_classes") != len(index["classes"]):
                raise ConfigError(f"distill.teacher: {d.teacher} predicts {arch.get('num_classes')} classes but "
                                  f"{cfg.data.shards} has {len(index['classes'])}")
        if d.student_init:
            model = finished_run_arch(d.student_init, "distill.student_init").get("model", {})
            if model.get("backbone") != cfg.model.backbone or model.get("width") != cfg.model.width:
                raise ConfigError(f"distill.student_init: {d.student_init} is a {model.get('backbone')} (width "
                                  f"{model.get('width')}) but model.backbone is {cfg.model.backbone} "
                                  f"(width {cfg.model.width})")
