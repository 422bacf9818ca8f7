"""Optimizers, parameter groups, the one LR scaling rule, and the schedule (a pure function of the step)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from simclr_hpc.config import OptimSection


def scaled_lr(optim: OptimSection, global_batch: int) -> float:
    """The run's peak LR. The only place the LR scaling rule lives (SimCLR appendix B.1: linear or square-root)."""
    ratio = global_batch / optim.base_batch
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[optim.lr_scaling]
    return optim.base_lr * factor


def lr_at(step: int, peak_lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Linear warmup from ~0 to ``peak_lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * peak_lr``.

    ``step`` counts optimizer steps from 0; the LR used for step s is ``lr_at(s, ...)``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights that get decay (and LARS adaptation), and BN parameters and biases that get neither.

    Every parameter of dimension 1 is a BN scale/shift or a bias (SimCLR appendix B.1 excludes both).
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "lars_exclude": False}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) over SGD with momentum.

    For each parameter tensor not excluded: trust = eta * ||w|| / ||g + wd * w||; the update is
    lr * trust * (g + wd * w) fed into momentum. Groups with ``lars_exclude=True`` (BN, bias) get plain momentum SGD
    without decay, as in SimCLR.

    Under DeepSpeed ZeRO 1/2 the optimizer steps one flat partition per group and rank, holding slices of many
    parameters: :meth:`set_partitions` says where each parameter lies in it, and the trust ratios are then computed
    per parameter, the norms of its slices summed over the ranks, exactly as for whole tensors.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)
        self._partitions: dict = {}
        self._sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] = lambda t: t

    def set_partitions(self, partitions: dict, sum_over_ranks: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``partitions``: ``{flat tensor: (parameters in its group, [(start, numel, parameter index), ...])}`` (see
        ``zero_state.partition_slots``); ``sum_over_ranks`` sums a tensor over the ranks that share the partitions."""
        self._partitions, self._sum_over_ranks = partitions, sum_over_ranks

    def _trust(self, w_norm: torch.Tensor, g_norm: torch.Tensor, eta: float) -> torch.Tensor:
        return torch.where((w_norm > 0) & (g_norm > 0), eta * w_norm / g_norm, torch.ones_like(w_norm))

    def _scale_flat(self, p: torch.Tensor, grad: torch.Tensor, eta: float) -> torch.Tensor:
        """``grad`` of a flat partition with each parameter's slice scaled by that parameter's trust ratio."""
        count, segments = self._partitions[p]
        squares = torch.zeros(2, count, dtype=torch.float32, device=p.device)
        for start, numel, index in segments:
            squares[0, index] = p.narrow(0, start, numel).float().pow(2).sum()
            squares[1, index] = grad.narrow(0, start, numel).float().pow(2).sum()
        norms = self._sum_over_ranks(squares).sqrt()  # whole-parameter norms: every rank's slices
        trust = self._trust(norms[0], norms[1], eta).to(grad.dtype)
        grad = grad.clone()
        for start, numel, index in segments:
            grad.narrow(0, start, numel).mul_(trust[index])
        return grad

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["lars_exclude"]:
                    wd = group["weight_decay"]
                    if wd:
                        grad = grad.add(p, alpha=wd)
                    if p in self._partitions:
                        grad = self._scale_flat(p, grad, group["eta"])
                    else:
                        grad = grad * self._trust(
                            torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad), group["eta"]
                        )
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.detach().clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, optim: OptimSection, lr: float) -> torch.optim.Optimizer:
    """The configured optimizer over ``param_groups(model)``; its LR is overwritten every step by the schedule."""
    groups = param_groups(model, optim.weight_decay)
    if optim.name == "lars":
        return LARS(groups, lr=lr, momentum=optim.momentum, eta=optim.lars_eta)
    for group in groups:
        group.pop("lars_exclude")
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=(optim.momentum, 0.999))
