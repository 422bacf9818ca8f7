"""Optimizer state across DeepSpeed's ZeRO partitions, in torch's own format.

Under ZeRO 1/2 (and DeepSpeed's bf16 optimizer) the torch optimizer steps flat fp32 partitions, one per parameter group
and rank, and each parameter's ``_hp_mapping`` (DeepSpeed's private link from a parameter to its fragment of the flat
partition) says which slice of it this rank holds. :func:`gather_state` assembles torch-format state (``state`` keyed by
parameter index in param-group order) from the fragments; :func:`scatter_state` writes such state back into them. So
a checkpoint resumes under DDP or DeepSpeed at any world size. Imports no DeepSpeed: it reads what DeepSpeed attached.
"""

from __future__ import annotations

import torch
from torch import nn

from simclr_hpc import distributed as D


def zero_mapped(param_groups: list[list[nn.Parameter]]) -> bool:
    """DeepSpeed keeps fp32 master weights and optimizer state in flat partitions (ZeRO 1/2, or bf16)."""
    return any(getattr(p, "_hp_mapping", None) is not None for group in param_groups for p in group)


def gather_state(ds_optimizer, param_groups: list[list[nn.Parameter]]) -> dict:
    """torch-format optimizer state assembled from DeepSpeed's flat fp32 partitions (ZeRO 1/2, bf16 optimizer).

    Each parameter's ``_hp_mapping`` says which fragment of it this rank holds (its place in the parameter and in the
    flat partition); every rank copies its fragments into a zero tensor of the parameter's size, and a sum over the
    ranks puts the whole tensor together."""
    base = ds_optimizer.optimizer  # the torch optimizer, stepping this rank's flat partitions
    state, groups, index = {}, [], 0
    for group, params in zip(base.param_groups, param_groups):
        flat = group["params"][0]
        flat_state = base.state.get(flat, {})
        # Every rank has the same keys: the flat partitions step together.
        tensor_keys = sorted(k for k, v in flat_state.items() if torch.is_tensor(v) and v.shape == flat.shape)
        scalars = {k: (v.clone().cpu() if torch.is_tensor(v) else v) for k, v in flat_state.items()
                   if k not in tensor_keys}  # e.g. Adam's step: one value for the whole group
        ids = []
        for param in params:
            mapping = getattr(param, "_hp_mapping", None)
            entry = {}
            for key in tensor_keys:
                full = torch.zeros(param.numel(), dtype=torch.float32, device=flat.device)
                if mapping is not None:  # this rank holds a fragment of the parameter
                    lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
                    full.narrow(0, lp.start, lp.numel).copy_(flat_state[key].narrow(0, hp.start, hp.numel))
                entry[key] = D.all_reduce_sum(full).reshape(param.shape).cpu()
            if entry:
                state[index] = {**entry, **scalars}
            ids.append(index)
            index += 1
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
    return {"state": state, "param_groups": groups}


def scatter_state(ds_optimizer, param_groups: list[list[nn.Parameter]], saved: dict) -> None:
    """Write torch-format optimizer state into this rank's flat partitions (the inverse of the gather above).

    The flat state tensors are created here; the base optimizer finds them at its first step and uses them (torch's
    optimizers only initialise missing state), and DeepSpeed links its per-parameter views to them then."""
    base = ds_optimizer.optimizer
    index = 0
    for group, params in zip(base.param_groups, param_groups):
        flat = group["params"][0]
        flat_state = base.state[flat]
        for param in params:
            entry = saved["state"].get(index, {})
            index += 1
            mapping = getattr(param, "_hp_mapping", None)
            for key, value in entry.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    if key not in flat_state:
                        flat_state[key] = torch.zeros_like(flat)
                    if mapping is not None:  # this rank holds a fragment of the parameter
                        lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
                        src = value.to(flat.device, flat.dtype).flatten().narrow(0, lp.start, lp.numel)
                        flat_state[key].narrow(0, hp.start, hp.numel).copy_(src)
                else:
                    flat_state[key] = value.clone().to(flat.device) if torch.is_tensor(value) else value
    for group, saved_group in zip(base.param_groups, saved["param_groups"]):
        for key, value in saved_group.items():
            if key not in ("params", "lr"):
                group[key] = value
