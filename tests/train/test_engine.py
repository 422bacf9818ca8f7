"""The engine's methods mean the same under DDP and DeepSpeed: ``backward`` only accumulates, ``optimizer_step`` applies
the accumulated gradients once and clears them, ``set_lr`` sets the rate of that step. One CPU process each (a
subprocess: Accelerate and DeepSpeed keep process-wide state)."""

import pytest
import torch
from torch import nn

from simclr_hpc.config import load_config
from simclr_hpc.train.engines import create_engine
from tests.distributed_helpers import run_ranks

LR = 0.1


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, generator=gen), torch.randn(4, 2, generator=gen)


@pytest.mark.parametrize(
    "overrides", [["dist.engine=ddp"], ["dist.engine=deepspeed", "optim.name=sgd"]], ids=["ddp", "deepspeed"]
)
def test_backward_only_accumulates_and_optimizer_step_applies_once_and_clears(tmp_path, overrides):
    x, y = _data()
    args = {"overrides": overrides, "lr": LR, "x": x.tolist(), "y": y.tolist()}
    (out,) = run_ranks("engine_protocol", 1, tmp_path, args)
    assert out["lrs"] == [LR]
    for weight in out["seen"]:
        assert torch.equal(weight, out["start"]), "backward changed the weights"
    # By hand: one SGD step on the mean squared error of the whole batch (what two half-batch micro-steps must give).
    start = out["start"].clone().requires_grad_(True)
    nn.functional.mse_loss(x @ start.T, y).backward()
    torch.testing.assert_close(out["grad"], start.grad, rtol=1e-6, atol=1e-7)  # both micro-batches accumulated
    torch.testing.assert_close(out["after"], (start - LR * start.grad).detach(), rtol=1e-6, atol=1e-7)
    assert out["cleared"], "optimizer_step left gradients behind"


def test_ddp_engine_on_one_cpu_process_reports_its_place_in_the_job():
    engine = create_engine(load_config())
    try:
        assert (engine.rank, engine.world_size, engine.is_main) == (0, 1, True)
        assert engine.device.type == "cpu" and not engine.bf16
        assert len(engine.hostnames) == 1
        model = nn.Linear(2, 2)
        prepared, _ = engine.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
        assert engine.unwrap(prepared) is model
        assert engine.model_state(prepared).keys() == model.state_dict().keys()
    finally:
        engine.close()
