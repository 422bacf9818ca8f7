"""A stand-in for ``simclr_hpc.train.runner.run_stage`` that the study engine tests hand to ``InProcessBackend``.

It writes a plausible ``result.json`` atomically (the same contract as the real runner), counts its calls in
``<root>/calls.log`` so that tests can assert which runs ran, and fails or "gets killed" on request through files:
``<root>/fail`` (run keys that raise, one per line) and ``<root>/kill_after`` (raise KeyboardInterrupt, as a killed study
would stop, once that many runs have been made in this process).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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
    for dep in (cfg.finetune.encoder, cfg.distill.teacher, cfg.distill.student_init, cfg.transfer.encoder):
        if stage != "pretrain" and dep and not (Path(dep) / "result.json").exists():
            raise RuntimeError(f"{key} started before its dependency {dep} finished")
    k = cfg.transfer.num_classes or 10
    top1 = 0.5 + 0.01 * (cfg.run.seed + len(cfg.run.name) % 7)
    metrics = {"top1": top1, "num_classes": k, "chance_norm_top1": (top1 - 1 / k) / (1 - 1 / k), "loss": 1.0}
    result = {"stage": stage, "run": cfg.run.name, "config_hash": cfg.hash(stage), "seed": cfg.run.seed,
              "steps": cfg.train.steps, "metrics": metrics, "run_dir": str(run_dir)}
    tmp = run_dir / ".result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, run_dir / "result.json")
    return result


def calls(root: Path) -> list[str]:
    path = Path(root) / "calls.log"
    return path.read_text().split() if path.exists() else []
