"""Optimizer state and fp32 master weights across DeepSpeed's partitions, in torch's own format.

Under ZeRO 1/2 (and DeepSpeed's bf16 optimizer) the torch optimizer steps flat fp32 partitions, one per parameter group
and rank, and each parameter's ``_hp_mapping`` (DeepSpeed's private link from a parameter to its fragment of the flat
partition) says which slice of it this rank holds. :func:`gather_state` assembles torch-format state (``state`` keyed by
parameter index in param-group order) from the fragments; :func:`scatter_state` writes such state back into them. So
a checkpoint resumes under DDP or DeepSpeed at any world size. :class:`Masters` reads and writes each parameter's fp32
master however DeepSpeed keeps it; :func:`partition_slots` tells LARS where each parameter lies in a flat partition.
Imports no DeepSpeed: it reads what DeepSpeed attached.
"""

from __future__ import annotations

import torch
from torch import nn

from simclr_hpc import distributed as D


def zero_mapped(param_groups: list[list[nn.Parameter]]) -> bool:
    """DeepSpeed keeps fp32 master weights and optimizer state in flat partitions (ZeRO 1/2, or its bf16 optimizer).
    The same answer on every rank (a parameter held by another rank has ``_hp_mapping = None`` here)."""
    return any(hasattr(p, "_hp_mapping") for group in param_groups for p in group)


class Masters:
    """The fp32 master weight of each module parameter, however DeepSpeed keeps it:

    * flat (ZeRO 1/2): fragments of per-rank flat partitions; :meth:`get` assembles one (a collective: every rank
      calls it for every parameter, in the same order);
    * unfused (ZeRO 0 with bf16 or fp16): a whole fp32 copy of each parameter (``fp32_groups``), which the torch
      optimizer steps while the module holds the 16-bit copies;
    * none (fp32 at ZeRO 0): the module's parameters are the masters (:meth:`get` returns None).
    """

    def __init__(self, ds_optimizer, param_groups: list[list[nn.Parameter]]):
        self.flat = zero_mapped(param_groups)
        lp, fp32 = getattr(ds_optimizer, "fp16_groups", None), getattr(ds_optimizer, "fp32_groups", None)
        pairs = zip((p for g in lp for p in g), (m for g in fp32 for m in g)) if lp and fp32 else ()
        self._copies = {id(p): m for p, m in pairs}

    @property
    def separate(self) -> bool:
        """The module's weights are 16-bit copies of masters kept elsewhere."""
        return self.flat or bool(self._copies)

    def get(self, param: nn.Parameter) -> torch.Tensor | None:
        if self.flat:
            return param.get_full_hp_param()
        return self._copies.get(id(param))

    def set(self, param: nn.Parameter, value: torch.Tensor) -> None:
        if self.flat:
            if param._hp_mapping is not None:
                param.set_full_hp_param(value)
        elif id(param) in self._copies:
            self._copies[id(param)].data.copy_(value)


def partition_slots(ds_optimizer, param_groups: list[list[nn.Parameter]]) -> dict:
    """Where each parameter lies in this rank's flat partitions (ZeRO 1/2), for a per-parameter LARS:
    ``{flat partition: (number of parameters in its group, [(start, numel, parameter index in the group), ...])}``."""
    out = {}
    for group, params in zip(ds_optimizer.optimizer.param_groups, param_groups):
        segments = [
            (m.hp_fragment_address.start, m.hp_fragment_address.numel, i)
            for i, m in enumerate(getattr(p, "_hp_mapping", None) for p in params)
            if m is not None
        ]
        out[group["params"][0]] = (len(params), segments)
    return out


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
        scalars = {
            k: (v.clone().cpu() if torch.is_tensor(v) else v) for k, v in flat_state.items() if k not in tensor_keys
        }  # e.g. Adam's step: one value for the whole group
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
