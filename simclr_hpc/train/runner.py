"""``run_stage``: what a job (or ``simclr-hpc run``) calls. Idempotent: a finished run returns its result; an
interrupted one resumes from its latest whole checkpoint."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from simclr_hpc import distributed as D
from simclr_hpc import fsutil, rundir
from simclr_hpc.config import STAGES, Config, ConfigError, dump_config, load_config
from simclr_hpc.rundir import Result
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train.engine import Engine, derive_batch
from simclr_hpc.train.loop import train
from simclr_hpc.train.metrics import log, quiet_third_party, setup_logging
from simclr_hpc.train.stages import TASKS
from simclr_hpc.train.task import StageContext, Task, TrainOutcome


def _device_name(engine: Engine) -> str:
    if engine.cuda:
        return f"cuda:{torch.cuda.get_device_name(engine.device)}"
    return "cpu"


def _require_finished(ref: str, field: str, allow_random: bool = False) -> None:
    if allow_random and ref == "random":
        return
    if not ref:
        raise ConfigError(f"{field}: empty; set it to the run directory of a finished run")
    if not rundir.is_finished(ref):
        what = "no such run directory" if not Path(ref).is_dir() else f"no {rundir.RESULT}: that run has not finished"
        raise ConfigError(f"{field}: {ref}: {what}; run it first or fix the path")


def check_inputs(stage: str, cfg: Config) -> None:
    """Everything a user can get wrong about a run's inputs, checked before anything is written or any group starts."""
    from simclr_hpc.data.shards import read_index
    from simclr_hpc.train.tracking import check_backends

    check_backends(cfg)
    if cfg.train.precision == "fp16" and cfg.dist.engine == "deepspeed" and not torch.cuda.is_available():
        raise ConfigError("train.precision: fp16 under dist.engine=deepspeed needs a GPU (DeepSpeed's CPU backend has "
                          "no fp16 loss scaling); use train.precision=fp32, or dist.engine=ddp for fp16 on CPU")
    index = read_index(cfg.data.shards)
    if stage != "pretrain" and not index.labelled:
        raise ConfigError(
            f"data.shards: {cfg.data.shards} holds unlabeled images ({index.source}) and {stage} needs labels; "
            "point data.shards at labelled shards (cifar10:, imagefolder:, npz:, ...) or run pretrain on these"
        )
    index.split(cfg.data.train_split)
    if stage != "pretrain":
        index.split(cfg.data.eval_split)
    if stage == "finetune":
        _require_finished(cfg.finetune.encoder, "finetune.encoder", allow_random=True)
        if cfg.finetune.label_subset_file:
            from simclr_hpc.data.subsets import positions_from_file

            train = index.split(cfg.data.train_split)
            positions_from_file(cfg.finetune.label_subset_file, train.keys, train.names)
    elif stage == "transfer":
        _require_finished(cfg.transfer.encoder, "transfer.encoder", allow_random=True)
        if cfg.transfer.num_classes > index.num_classes:
            raise ConfigError(
                f"transfer.num_classes: {cfg.transfer.num_classes} but {cfg.data.shards} has {index.num_classes} "
                f"classes; use 0 (all) or 1..{index.num_classes}"
            )
    elif stage == "distill":
        if cfg.distill.teacher:
            _require_finished(cfg.distill.teacher, "distill.teacher")
        if cfg.distill.student_init:
            _require_finished(cfg.distill.student_init, "distill.student_init")


def prepare_run_dir(stage: str, cfg: Config) -> None:
    """Create the run directory and write ``config.yaml`` before the first step (rank 0 only).

    A directory that already holds a different config is refused: resuming it would mix two experiments.
    """
    run_dir = cfg.run_dir(stage)
    path = rundir.config_path(run_dir)
    if path.exists():
        previous = load_config(path)
        before, now = previous.hash(stage), cfg.hash(stage)
        if before != now:
            raise ConfigError(
                f"run.name: {run_dir} was started with a different config (hash {before} != {now}); "
                "choose another run.name or delete that directory"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fsutil.write_text_atomic(path, dump_config(cfg))


def run_stage(stage: str, cfg: Config) -> dict:
    """Run one stage to completion in this process (one rank of a job) and return its result.json content."""
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    quiet_third_party()  # a job's process does not come through the CLI's own call
    env = D.DistEnv.from_env()
    # Checked before any process group starts: a bad split must not hang N ranks.
    per_device, micro, accumulation = derive_batch(cfg.train.global_batch, env.world_size, cfg.train.max_batch_per_device)
    run_dir = cfg.run_dir(stage)
    done = rundir.result_path(run_dir)
    if done.exists():
        return json.loads(done.read_text())
    check_inputs(stage, cfg)
    if env.rank == 0:
        prepare_run_dir(stage, cfg)
    t0 = time.time()
    engine = Engine(cfg, env)
    setup_logging(engine.rank)
    try:
        ctx = StageContext(cfg, engine, run_dir, per_device, micro, accumulation)
        log.info(
            "%s %s: world size %d on %s, global batch %d = %d per device (%d x %d micro), device %s",
            stage, run_dir, engine.world_size, ",".join(engine.hostnames), cfg.train.global_batch, per_device,
            accumulation, micro, _device_name(engine),
        )
        task = TASKS[stage](ctx)
        if engine.is_main and task.subset() is not None:
            fsutil.write_json_atomic(rundir.subset_path(run_dir), task.subset())
        outcome = train(task, ctx)
        result = _result(stage, ctx, task, outcome, time.time() - t0)
        if engine.is_main:
            result.write(run_dir)
            log.info("%s done: %s", run_dir, json.dumps(result.metrics))
        engine.barrier()
    finally:
        engine.close()
    return result.to_json()


def _result(stage: str, ctx: StageContext, task: Task, outcome: TrainOutcome, wall_s: float) -> Result:
    """The run's result.json: its config's coordinates, the outcome, the runtime facts and the task's facts."""
    cfg, engine = ctx.cfg, ctx.engine
    latest = ckpt.latest_whole(rundir.checkpoints_dir(ctx.run_dir))
    return Result(
        stage=stage, study=cfg.run.study, run=cfg.run.name, run_dir=str(ctx.run_dir), config_hash=cfg.hash(stage),
        seed=cfg.run.seed, steps=cfg.train.steps, global_batch=cfg.train.global_batch, per_device_batch=ctx.per_device,
        accumulation=ctx.accumulation, metrics={**outcome.metrics, "loss": outcome.loss}, wall_s=wall_s,
        images_per_s=outcome.images_per_s, skipped_samples=outcome.skipped_samples, device=_device_name(engine),
        world_size=engine.world_size, hostnames=engine.hostnames,
        checkpoint_sha256=ckpt.read_meta(latest)["sha256"] if latest else None,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), precision=engine.precision,
        amp_skipped_steps=engine.amp_skipped if engine.fp16 else None, **task.facts(),
    )
