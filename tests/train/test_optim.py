"""LR rule, schedule, parameter groups and LARS."""

import math

import pytest
import torch
from torch import nn

from simclr_hpc.config import OptimSection
from simclr_hpc.train.optim import LARS, build_optimizer, lr_at, param_groups, scaled_lr


def test_lr_rule_linear_and_sqrt():
    assert scaled_lr(OptimSection(base_lr=0.3, lr_scaling="linear", base_batch=256), 4096) == pytest.approx(4.8)
    assert scaled_lr(OptimSection(base_lr=0.075, lr_scaling="sqrt", base_batch=1), 4096) == pytest.approx(4.8)
    assert scaled_lr(OptimSection(base_lr=0.1, lr_scaling="none"), 4096) == pytest.approx(0.1)


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_min():
    peak, total, warm = 2.0, 110, 10
    assert lr_at(0, peak, total, warm) == pytest.approx(0.2)
    assert lr_at(9, peak, total, warm) == pytest.approx(2.0)
    assert lr_at(10, peak, total, warm) == pytest.approx(2.0)
    assert lr_at(60, peak, total, warm) == pytest.approx(1.0)
    assert lr_at(110, peak, total, warm, min_lr_ratio=0.1) == pytest.approx(0.2)
    values = [lr_at(s, peak, total, warm) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_bn_and_bias_are_excluded_from_decay_and_lars():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    groups = param_groups(model, 1e-4)
    decay, no_decay = groups
    assert {p.ndim for p in decay["params"]} == {2, 4}
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"] is True
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_lars_step_uses_trust_ratio_on_weights_and_plain_sgd_on_excluded():
    w = nn.Parameter(torch.full((2, 2), 3.0))
    b = nn.Parameter(torch.full((2,), 1.0))
    opt = LARS(
        [
            {"params": [w], "weight_decay": 0.0, "lars_exclude": False},
            {"params": [b], "weight_decay": 0.0, "lars_exclude": True},
        ],
        lr=1.0,
        momentum=0.0,
        eta=0.01,
    )
    w.grad = torch.full((2, 2), 0.5)
    b.grad = torch.full((2,), 0.5)
    opt.step()
    trust = 0.01 * 6.0 / 1.0  # eta * ||w|| / ||g||
    assert torch.allclose(w, torch.full((2, 2), 3.0 - trust * 0.5))
    assert torch.allclose(b, torch.full((2,), 0.5))


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_every_optimizer_reduces_a_quadratic(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = build_optimizer(
        model, OptimSection(name=name, weight_decay=0.0, lars_eta=0.02), lr=0.05 if name != "lars" else 1.0
    )
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    first = None
    for _ in range(50):
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item()) and loss.item() < 0.5 * first
