"""The loop as a unit, on a tiny real Task (linear regression on seeded data): steps, checkpoints, resume, outcome."""

import itertools
import json

import pytest
import torch
from torch import nn

from simclr_hpc import rundir
from simclr_hpc.config import ModelSection, load_config
from simclr_hpc.models import Arch
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train.engines import create_engine
from simclr_hpc.train.loop import train
from simclr_hpc.train.task import StageContext, Task, TrainOutcome

STEPS, EVERY, BATCH = 6, 2, 4


class LinearRegression:
    """A complete Task: y = x @ W* + noise, a linear model trained on seeded per-segment batches."""

    stage = "pretrain"
    fitted_by_build = False

    def __init__(self, ctx: StageContext, crash_at_step: int | None = None):
        self.ctx, self.crash_at_step = ctx, crash_at_step
        self.calls = {"segments": [], "steps": 0, "arch": 0, "export": 0}

    def build(self) -> nn.Module:
        return nn.Linear(3, 1)

    def batches(self, first_segment: int):
        self.calls["segments"].append(first_segment)  # the loop builds one iterator per run
        return self._from(first_segment)

    def _from(self, first_segment: int):
        for segment in itertools.count(first_segment):
            gen = torch.Generator().manual_seed(1000 + segment)
            for _ in range(EVERY):
                x = torch.randn(BATCH, 3, generator=gen)
                yield {"views": (x,), "y": x @ torch.tensor([[1.0], [-2.0], [0.5]]), "skipped": 1}

    def step(self, model: nn.Module, batch: dict) -> torch.Tensor:
        self.calls["steps"] += 1
        if self.calls["steps"] == self.crash_at_step:
            raise KeyboardInterrupt("killed")
        x, y = batch["views"][0], batch["y"]
        loss = nn.functional.mse_loss(model(x), y)
        self.ctx.engine.backward(loss)
        return loss.detach()

    def monitor(self, model: nn.Module, step: int) -> dict:
        return {}

    def evaluate(self, model: nn.Module) -> dict:
        return {"weight_norm": float(self.ctx.engine.unwrap(model).weight.detach().norm())}

    def arch(self) -> Arch:
        self.calls["arch"] += 1
        return Arch("simclr", ModelSection())

    def export(self, model: nn.Module) -> dict:
        self.calls["export"] += 1
        return {k: v.cpu() for k, v in self.ctx.engine.unwrap(model).state_dict().items()}

    def facts(self) -> dict:
        return {}

    def subset(self):
        return None


def _run(
    tmp_path, name: str, crash_at_step: int | None = None, extra: tuple[str, ...] = ()
) -> tuple[LinearRegression, TrainOutcome | None]:
    cfg = load_config(
        overrides=[
            f"run.root={tmp_path}",
            f"run.name={name}",
            f"train.steps={STEPS}",
            f"train.ckpt_every_steps={EVERY}",
            "train.log_every_steps=1",
            f"train.global_batch={BATCH}",
            "optim.name=sgd",
            "optim.base_lr=0.05",
            "optim.lr_scaling=none",
            "optim.warmup_steps=1",
            *extra,
        ]
    )
    run_dir = cfg.run_dir("pretrain")
    run_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(cfg)
    task = LinearRegression(StageContext(cfg, engine, run_dir, BATCH, BATCH, 1), crash_at_step)
    assert isinstance(task, Task)  # the protocol is runtime-checkable: a missing method would fail here
    try:
        return task, train(task, task.ctx)
    except KeyboardInterrupt:
        return task, None
    finally:
        engine.close()


def test_loop_trains_to_the_configured_steps_and_returns_its_outcome(tmp_path):
    task, outcome = _run(tmp_path, "whole")
    run_dir = task.ctx.run_dir
    assert outcome.steps == STEPS and outcome.skipped_samples == STEPS and outcome.images_per_s > 0
    assert set(outcome.metrics) == {"weight_norm"} and outcome.metrics["weight_norm"] > 0
    assert task.calls["segments"] == [0] and task.calls["steps"] == STEPS  # one loader for the whole run
    # arch at every checkpoint, the exported weights only once, for the final one
    assert task.calls["arch"] == STEPS // EVERY and task.calls["export"] == 1
    steps = [json.loads(line)["step"] for line in rundir.metrics_path(run_dir).read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
    assert json.loads(rundir.metrics_path(run_dir).read_text().splitlines()[-1])["loss"] == outcome.loss
    final = ckpt.latest_whole(rundir.checkpoints_dir(run_dir))
    meta = ckpt.read_meta(final)
    assert meta["step"] == STEPS and meta["config_hash"] == task.ctx.cfg.hash("pretrain")
    assert meta["arch"] == {"kind": "simclr", "model": ModelSection().model_dump()}
    state = ckpt.load_state(final)
    assert state["skipped"] == STEPS and state["export"].keys() == {"weight", "bias"}


def test_loop_resumed_after_a_crash_ends_bitwise_where_an_uninterrupted_run_ends(tmp_path):
    _, whole = _run(tmp_path, "whole")
    crashed, outcome = _run(tmp_path, "cut", crash_at_step=EVERY * 2 + 1)  # dies in step 5, after checkpoint 4
    assert outcome is None
    run_dir = crashed.ctx.run_dir
    assert ckpt.read_meta(ckpt.latest_whole(rundir.checkpoints_dir(run_dir)))["step"] == 4
    resumed, outcome = _run(tmp_path, "cut")
    assert resumed.calls["segments"] == [2] and resumed.calls["steps"] == STEPS - 4  # only what was left
    assert outcome.steps == STEPS and outcome.skipped_samples == STEPS  # skipped counts survive the resume
    assert outcome.loss == whole.loss and outcome.metrics == whole.metrics
    a = ckpt.load_state(ckpt.latest_whole(tmp_path / "adhoc" / "pretrain" / "whole" / "checkpoints"))["model"]
    b = ckpt.load_state(ckpt.latest_whole(rundir.checkpoints_dir(run_dir)))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in rundir.metrics_path(run_dir).read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1)), "a step was logged twice or lost"


def test_losses_reach_the_host_only_at_logged_steps_not_every_step(tmp_path, monkeypatch):
    """A loss read on the host (``.item()``) waits for the GPU to finish everything queued: once per step that drains
    the GPU's queue every step. The loop keeps the losses on the device and reads them together at logged steps and
    before each checkpoint (a NaN still never reaches a checkpoint)."""
    from simclr_hpc.train import loop

    reads, real = [], loop._Progress.read_losses

    def spy(progress, run_dir):
        if progress.unread:
            reads.append([step for step, _ in progress.unread])
        return real(progress, run_dir)

    monkeypatch.setattr(loop._Progress, "read_losses", spy)
    _, outcome = _run(tmp_path, "lazy", extra=("train.log_every_steps=3", "train.ckpt_every_steps=6"))
    assert reads == [[1, 2, 3], [4, 5, 6]] and outcome.steps == STEPS
    lines = [
        json.loads(line)
        for line in rundir.metrics_path(tmp_path / "adhoc" / "pretrain" / "lazy").read_text().splitlines()
    ]
    assert [line["step"] for line in lines] == [3, 6] and lines[-1]["loss"] == outcome.loss


@pytest.mark.parametrize("stage_cls", ["PretrainTask", "FinetuneTask", "TransferTask", "DistillTask"])
def test_every_stage_class_implements_the_task_protocol(stage_cls):
    from simclr_hpc.train import stages

    cls = getattr(stages, stage_cls)
    missing = [
        name
        for name in ("stage", "build", "batches", "step", "evaluate", "arch", "export", "facts", "subset")
        if not hasattr(cls, name)
    ]
    from simclr_hpc.config import STAGES
    from simclr_hpc.train.task_table import TASKS

    assert not missing and cls.stage in TASKS and TASKS[cls.stage].task() is cls
    assert tuple(TASKS) == STAGES  # the task table names the stages config knows, in the same order
