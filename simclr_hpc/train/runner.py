"""``run_stage``: what a job (or ``simclr-hpc run``) calls. Idempotent: a finished run returns its result; an
interrupted one resumes from its latest whole checkpoint."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone
from typing import Callable

import torch

from simclr_hpc import distributed as D
from simclr_hpc import fsutil, references, rundir
from simclr_hpc.config import STAGES, Config, ConfigError, dump_config, load_config, stage_problems
from simclr_hpc.outputs import check_output_dir
from simclr_hpc.readers import read_json
from simclr_hpc.rundir import Result
from simclr_hpc.runlock import RunLock
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train.engine import Engine, derive_batch
from simclr_hpc.train.engines import create_engine
from simclr_hpc.train.loop import train
from simclr_hpc.train.metrics import log, quiet_third_party, setup_logging
from simclr_hpc.train.task import StageContext, Task, TrainOutcome
from simclr_hpc.train.task_table import TASKS


def _device_name(engine: Engine) -> str:
    if engine.cuda:
        return f"cuda:{torch.cuda.get_device_name(engine.device)}"
    return "cpu"


def check_inputs(stage: str, cfg: Config):
    """Everything a user can get wrong about a run's inputs, checked before anything is written or any group starts:
    the tracking backends, what the engine can do here, and what the stage reads (its row of the task table, through
    ``references.check_inputs``). Returns the shards' index."""
    from simclr_hpc.train.tracking import check_backends

    check_backends(cfg)
    if cfg.train.precision == "fp16" and cfg.dist.engine == "deepspeed" and not torch.cuda.is_available():
        raise ConfigError(
            "train.precision: fp16 under dist.engine=deepspeed needs a GPU (DeepSpeed's CPU backend has "
            "no fp16 loss scaling); use train.precision=fp32, or dist.engine=ddp for fp16 on CPU"
        )
    if problems := stage_problems(stage, cfg):
        raise ConfigError(problems)
    return references.check_inputs(stage, cfg)


def check_same_config(stage: str, cfg: Config) -> bool:
    """True if the run directory was started with this config, False if it was never started; a directory that holds
    a different config is refused: resuming it would mix two experiments, returning its result would answer another
    question."""
    run_dir = cfg.run_dir(stage)
    path = rundir.config_path(run_dir)
    if not path.exists():
        return False
    before, now = load_config(path).hash(stage), cfg.hash(stage)
    if before != now:
        raise ConfigError(
            f"run.name: {run_dir} was started with a different config (hash {before} != {now}); "
            "choose another run.name or delete that directory"
        )
    return True


def prepare_run_dir(stage: str, cfg: Config) -> None:
    """Create the run directory and write ``config.yaml`` before the first step (rank 0 only)."""
    if not check_same_config(stage, cfg):
        cfg.run_dir(stage).mkdir(parents=True, exist_ok=True)
        fsutil.write_text_atomic(rundir.config_path(cfg.run_dir(stage)), dump_config(cfg))


def finished_result(stage: str, cfg: Config) -> dict | None:
    """The result of a finished run of exactly this config, None if it has not finished; another config's is refused."""
    path = rundir.result_path(cfg.run_dir(stage))
    if not path.exists():
        return None
    check_same_config(stage, cfg)
    result = read_json(path, "result.json")
    recorded = result.get("config_hash") if isinstance(result, dict) else "?"
    if recorded != cfg.hash(stage):
        raise ConfigError(
            f"run.name: {path} was written by a different config (config_hash {recorded} != "
            f"{cfg.hash(stage)}); choose another run.name or delete that directory"
        )
    before = {"data": result.get("data_hash"), **(result.get("inputs_sha256") or {})}
    changed = references.changed_inputs(
        {k: v for k, v in before.items() if isinstance(v, str)}, references.input_hashes(stage, cfg)
    )
    if changed:  # same config, other data or another encoder behind the same paths: its result answers for neither
        raise ConfigError(
            f"run.name: {cfg.run_dir(stage)} finished on inputs that have changed since "
            f"({', '.join(changed)}); delete that directory to run it on the current ones, or choose "
            "another run.name"
        )
    return result


def run_stage(stage: str, cfg: Config, job_alive: Callable[[str], bool | None] | None = None) -> dict:
    """Run one stage to completion in this process (one rank of a job) and return its result.json content.

    Rank 0 holds the run directory's lock (``simclr_hpc.runlock``) from before its first write to the end;
    ``job_alive(slurm_job_id)`` lets it take over the lock of a job that Slurm says has ended.
    """
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    quiet_third_party()  # a job's process does not come through the CLI's own call
    env = D.DistEnv.from_env()
    # Checked before any process group starts: a bad split must not hang N ranks.
    per_device, micro, accumulation = derive_batch(
        cfg.train.global_batch, env.world_size, cfg.train.max_batch_per_device
    )
    done = finished_result(stage, cfg)
    if done is not None:
        return done
    check_inputs(stage, cfg)
    inputs = references.input_hashes(stage, cfg)  # after check_inputs verified each checkpoint against its sha256
    check_output_dir(cfg.run.root, "run.root")
    # Meet the other ranks before anything is written, under a deadline that names them (a stale WORLD_SIZE in a
    # shell must not hang silently or leave a run directory); the engine then finds the group started (its backend).
    D.join_process_group(env, "nccl" if torch.cuda.is_available() else "gloo", cfg.train.collective_timeout_s)
    with RunLock(cfg.run_dir(stage), job_alive) if env.rank == 0 else contextlib.nullcontext():
        done = finished_result(stage, cfg)  # finished while we waited for the lock
        if done is not None:
            return done
        if env.rank == 0:
            prepare_run_dir(stage, cfg)
        return _train(stage, cfg, env, per_device, micro, accumulation, inputs)


def _train(
    stage: str, cfg: Config, env: D.DistEnv, per_device: int, micro: int, accumulation: int, inputs: dict[str, str]
) -> dict:
    run_dir = cfg.run_dir(stage)
    t0 = time.time()
    engine = create_engine(cfg, env)
    setup_logging(engine.rank)
    try:
        ctx = StageContext(cfg, engine, run_dir, per_device, micro, accumulation)
        log.info(
            "%s %s: world size %d on %s, global batch %d = %d per device (%d x %d micro), device %s",
            stage,
            run_dir,
            engine.world_size,
            ",".join(engine.hostnames),
            cfg.train.global_batch,
            per_device,
            accumulation,
            micro,
            _device_name(engine),
        )
        task = TASKS[stage].task()(ctx)
        if engine.is_main and task.subset() is not None:
            fsutil.write_json_atomic(rundir.subset_path(run_dir), task.subset())
        outcome = train(task, ctx)
        result = _result(stage, ctx, task, outcome, time.time() - t0, inputs)
        if engine.is_main:
            result.write(run_dir)
            log.info("%s done: %s", run_dir, fsutil.dumps_json(result.metrics))
        engine.barrier()
    finally:
        engine.close()
    return result.to_json()


def _metrics(outcome: TrainOutcome) -> dict:
    """The task's metrics and the last step's loss (none when the task was fitted without a step: a linear probe's
    loss is its ``probe_train_loss``)."""
    return {**outcome.metrics, "loss": outcome.loss} if outcome.steps else dict(outcome.metrics)


def _result(
    stage: str, ctx: StageContext, task: Task, outcome: TrainOutcome, wall_s: float, inputs: dict[str, str]
) -> Result:
    """The run's result.json: its config's coordinates, the outcome, the runtime facts and the task's facts."""
    cfg, engine = ctx.cfg, ctx.engine
    latest = ckpt.latest_whole(rundir.checkpoints_dir(ctx.run_dir))
    return Result(
        stage=stage,
        study=cfg.run.study,
        run=cfg.run.name,
        run_dir=str(ctx.run_dir),
        config_hash=cfg.hash(stage),
        data_hash=inputs.get("data"),
        inputs_sha256={k: v for k, v in inputs.items() if k != "data"} or None,
        seed=cfg.run.seed,
        steps=outcome.steps,
        global_batch=cfg.train.global_batch,
        per_device_batch=ctx.per_device,
        accumulation=ctx.accumulation,
        metrics=_metrics(outcome),
        wall_s=wall_s,
        images_per_s=outcome.images_per_s,
        skipped_samples=outcome.skipped_samples,
        device=_device_name(engine),
        world_size=engine.world_size,
        hostnames=engine.hostnames,
        checkpoint_sha256=ckpt.read_meta(latest)["sha256"] if latest else None,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        precision=engine.precision,
        amp_skipped_steps=engine.amp_skipped if engine.fp16 else None,
        **task.facts(),
    )
