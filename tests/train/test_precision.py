"""train.precision: what each setting resolves to, and fp16's loss scaler (skips an overflowing step, resumes exactly)."""

import pytest
import torch
from torch import nn

from simclr_hpc.train.precision import LossScaler, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "requested,cuda,bf16,want",
    [
        ("auto", True, True, "bf16"),
        ("auto", True, False, "fp16"),
        ("auto", False, False, "fp32"),
        ("fp16", False, False, "fp16"),
        ("bf16", False, False, "bf16"),
        ("bf16", True, True, "bf16"),
        ("fp32", True, True, "fp32"),
        ("fp16", True, True, "fp16"),
    ],
)
def test_precision_setting_resolves_per_device(requested, cuda, bf16, want):
    assert resolve_precision(requested, cuda, bf16) == want


@pytest.mark.parametrize(
    "capability,want",
    [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")],
    ids=["V100", "T4", "A100", "H100"],
)
def test_auto_is_fp16_where_bf16_is_only_emulated(monkeypatch, capability, want):
    """``torch.cuda.is_bf16_supported()`` says yes on a V100 or T4 (emulated bf16, several times slower than fp16):
    ``auto`` goes by the compute capability instead. (The GPU is simulated: its capability is all that is read.)"""
    from simclr_hpc.train import precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert precision.device_precision("auto", torch.device("cuda", 0)) == want


def _model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_fp16_scaler_skips_a_step_whose_gradients_overflow_and_counts_it():
    model, optimizer = _model_and_optimizer()
    scaler = LossScaler("fp16", CPU)
    x = torch.randn(3, 4)
    scaler.scale(model(x).sum()).backward()
    assert scaler.step(optimizer) is True
    optimizer.zero_grad()
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale(model(x).sum() * float("inf")).backward()
    assert scaler.step(optimizer) is False and scaler.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the overflowing step changed nothing


def test_scaler_state_round_trips_so_a_resumed_run_keeps_its_scale_and_count():
    model, optimizer = _model_and_optimizer()
    scaler = LossScaler("fp16", CPU)
    scaler.scale(model(torch.randn(2, 4)).sum() * float("inf")).backward()
    scaler.step(optimizer)
    state = scaler.state_dict()
    resumed = LossScaler("fp16", CPU)
    resumed.load_state_dict(state)
    assert resumed.skipped == 1 and resumed.scaler.get_scale() == scaler.scaler.get_scale() == 2.0**15
    plain = LossScaler("fp32", CPU)
    loss = model(torch.randn(2, 4)).sum()
    assert plain.scale(loss) is loss and plain.state_dict() == {"scaler": {}, "skipped": 0}
