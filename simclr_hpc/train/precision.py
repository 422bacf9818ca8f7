"""Numeric precision of a run: which dtype autocast uses, and fp16's dynamic loss scaling.

``train.precision``: ``bf16`` | ``fp16`` | ``fp32`` | ``auto``. ``auto`` is bf16 on a GPU that has it in hardware
(compute capability 8.0, Ampere, and newer), fp16 on older GPUs (V100, T4, where ``torch.cuda.is_bf16_supported()``
still says yes: bf16 there is emulated and several times slower), fp32 on CPU. An explicit ``fp16`` or ``bf16`` runs
on CPU too (autocast on CPU; fp16 with a ``GradScaler("cpu")``): slower than fp32 there, but the 16-bit paths of both
engines (DeepSpeed's bf16 master weights included) can be exercised without a GPU.

fp16 has 5 exponent bits: small gradients underflow to zero unless the loss is scaled up before backward and the
gradients scaled down before the step. ``LossScaler`` wraps ``torch.amp.GradScaler`` (dynamic scale, halved on an
overflow, doubled after 2000 clean steps); a step whose gradients overflowed is skipped and counted, and the scaler's
state goes into every checkpoint so a resumed run continues with the same scale (and the same skipped steps).
"""

from __future__ import annotations

import contextlib

import torch

from simclr_hpc.config import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """The precision a run uses: ``bf16``, ``fp16`` or ``fp32`` (see the module docstring); ``bf16_supported``: in
    hardware (:func:`native_bf16`)."""
    if requested == "auto":
        return ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if requested not in ("bf16", "fp16", "fp32"):
        raise ConfigError(f"train.precision: {requested!r}; use bf16, fp16, fp32 or auto")
    return requested


def native_bf16(device: torch.device) -> bool:
    """bf16 in hardware: a CUDA device of compute capability 8.0 (Ampere) or newer."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def device_precision(requested: str, device: torch.device) -> str:
    """``resolve_precision`` for this process's device."""
    return resolve_precision(requested, device.type == "cuda", native_bf16(device))


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


class LossScaler:
    """Dynamic loss scaling for fp16 (a pass-through for bf16 and fp32, which need none).

    ``scale(loss)`` before backward; ``step(optimizer)`` unscales, steps unless a gradient overflowed, updates the scale
    and returns whether the step was applied; ``skipped`` counts the steps it dropped over the whole run."""

    def __init__(self, precision: str, device: torch.device):
        self.enabled = precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.enabled)
        self.skipped = 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.enabled else loss

    def step(self, optimizer) -> bool:
        if not self.enabled:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        # GradScaler lowers the scale exactly when it found inf/NaN gradients and skipped optimizer.step().
        stepped = self.scaler.get_scale() >= before
        self.skipped += 0 if stepped else 1
        return stepped

    def state_dict(self) -> dict:
        """Plain values only (loads with ``weights_only=True``)."""
        return {"scaler": self.scaler.state_dict() if self.enabled else {}, "skipped": self.skipped}

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        self.skipped = int(state.get("skipped", 0))
        if self.enabled and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
