"""A stand-in for ``simclr_hpc.train.runner.run_stage`` that the study pipeline tests run as their jobs' target.

Like the real runner it first checks its inputs (``references.check_inputs``: shards, finished input runs), then
writes what a finished run leaves: a whole checkpoint (``meta.json`` with the arch, ``state.pt``, ``COMPLETE``,
``latest``) and ``result.json`` atomically, so the real input checks of later runs accept it. It counts its calls in
``<root>/calls.log`` so that tests can assert which runs ran, and fails or "gets killed" on request through files:
``<root>/fail`` (run keys that raise, one per line) and ``<root>/kill_after`` (raise KeyboardInterrupt, as a killed study
would stop, once that many runs have been made in this process).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from simclr_hpc.references import check_inputs

CALLS_THIS_PROCESS = {"n": 0}


def run_stage(stage: str, cfg) -> dict:
    root = Path(cfg.run.root)
    key = f"{stage}/{cfg.run.name}"
    kill_after = root / "kill_after"
    if kill_after.exists() and CALLS_THIS_PROCESS["n"] >= int(kill_after.read_text()):
        raise KeyboardInterrupt(f"killed before {key}")
    CALLS_THIS_PROCESS["n"] += 1
    with (root / "calls.log").open("a") as fh:
        fh.write(key + "\n")
    run_dir = cfg.run_dir(stage)
    run_dir.mkdir(parents=True, exist_ok=True)
    fail = root / "fail"
    if fail.exists() and key in fail.read_text().split():
        raise RuntimeError(f"injected failure of {key}")
    index = check_inputs(stage, cfg)  # as the real runner does first: a missing input fails the run at once
    k = cfg.transfer.num_classes or index.num_classes
    sha = _checkpoint(run_dir, stage, cfg, k)
    top1 = 0.5 + 0.01 * (cfg.run.seed + len(cfg.run.name) % 7)
    metrics = {"top1": top1, "num_classes": k, "chance_norm_top1": (top1 - 1 / k) / (1 - 1 / k), "loss": 1.0}
    result = {
        "stage": stage,
        "run": cfg.run.name,
        "config_hash": cfg.hash(stage),
        "seed": cfg.run.seed,
        "steps": cfg.train.steps,
        "metrics": metrics,
        "run_dir": str(run_dir),
        "checkpoint_sha256": sha,
        "data_hash": index.content_hash,
    }
    tmp = run_dir / ".result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, run_dir / "result.json")
    return result


def _checkpoint(run_dir: Path, stage: str, cfg, num_classes: int) -> str:
    """A whole last checkpoint, as ``train/checkpoint.py`` lays it out, holding the arch later runs check."""
    step = run_dir / "checkpoints" / "step-00000001"
    step.mkdir(parents=True, exist_ok=True)
    state = f"{stage}/{cfg.run.name}".encode()
    (step / "state.pt").write_bytes(state)
    sha = hashlib.sha256(state).hexdigest()
    model = {"backbone": cfg.model.backbone, "width": cfg.model.width, "proj_layers": cfg.model.proj_layers}
    kind = "simclr" if stage == "pretrain" else "classifier"
    (step / "meta.json").write_text(
        json.dumps({"arch": {"kind": kind, "model": model, "num_classes": num_classes}, "sha256": sha, "step": 1})
    )
    (step / "COMPLETE").write_text("")
    latest = run_dir / "checkpoints" / "latest"
    if not latest.exists():
        latest.symlink_to(step.name)
    return sha


def calls(root: Path) -> list[str]:
    path = Path(root) / "calls.log"
    return path.read_text().split() if path.exists() else []
