"""Each stage's recommended recipe: the defaults a stage run starts from when its stage is known.

A run's config is built as: the field defaults of ``config.py`` (pretraining's: LARS at lr 0.3 x B/256), then the
recipe of its stage and protocol below, then the user's file, then ``--set``. So ``run finetune --set
finetune.protocol=full`` fine-tunes with SimCLR's fine-tuning SGD, not with LARS at pretraining's learning rate. The recipe is chosen by the
stage and by the protocol the user's layers select (``finetune.protocol`` / ``transfer.protocol``, default linear).

* **linear** (finetune and transfer): no optimiser settings. The probe is solved, not trained by the loop:
  ``train/probe.py`` fits an L2-regularised logistic regression on the frozen features to convergence (L-BFGS) for a
  path of penalties and keeps the one that scores best on ``data.val_split``, so ``optim.*`` and ``train.steps`` are
  not read. (Until issue 20 it was AdamW, lr 0.01, weight decay 0.3, 1,000 steps: one penalty for every feature type,
  1.2-4.9 points below the solved probe on the demo's raw pixels.)
* **full** (every layer trained): SGD with momentum 0.9 at lr 0.05 x B/256, no warmup, no weight decay: SimCLR's
  fine-tuning recipe (Chen et al. 2020, appendix B.5), without Nesterov. The number of steps stays the user's budget.
* **distill**: SGD with momentum 0.9 at lr 0.1 x B/256, weight decay 1e-5, 10 warmup steps, as
  ``configs/distill/default.yaml`` (whose 100 warmup steps suit its 5,000-step budget, not the default 100 steps).
* **pretrain** has no recipe: the field defaults are pretraining's (SimCLR's LARS recipe).

This module imports nothing from the project: ``config.py`` imports it.
"""

from __future__ import annotations

LINEAR_PROBE: dict = {}
"""Empty on purpose: the linear probe has no optimiser (see the module doc)."""
FULL_FINETUNE: dict = {
    "optim": {
        "name": "sgd",
        "base_lr": 0.05,
        "lr_scaling": "linear",
        "base_batch": 256,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_steps": 0,
    },
}
DISTILL: dict = {
    "optim": {
        "name": "sgd",
        "base_lr": 0.1,
        "lr_scaling": "linear",
        "base_batch": 256,
        "momentum": 0.9,
        "weight_decay": 1e-5,
        "warmup_steps": 10,
    },
}
RECIPES: dict[tuple[str, str], dict] = {
    ("finetune", "linear"): LINEAR_PROBE,
    ("transfer", "linear"): LINEAR_PROBE,
    ("finetune", "full"): FULL_FINETUNE,
    ("transfer", "full"): FULL_FINETUNE,
    ("distill", ""): DISTILL,
}
PROTOCOL_STAGES = ("finetune", "transfer")
"""Stages whose recipe depends on their section's ``protocol`` field."""


def protocol_of(stage: str, layers: list[dict]) -> str:
    """The protocol the layers select for ``stage`` (the last layer that sets it wins); "" for stages without one."""
    if stage not in PROTOCOL_STAGES:
        return ""
    protocol = "linear"
    for layer in layers:
        section = layer.get(stage) if isinstance(layer, dict) else None
        if isinstance(section, dict) and isinstance(section.get("protocol"), str):
            protocol = section["protocol"]
    return protocol


def stage_recipe(stage: str, layers: list[dict]) -> dict:
    """The recipe layer of ``stage`` under the protocol ``layers`` select; {} for pretrain or an unknown stage."""
    return RECIPES.get((stage, protocol_of(stage, layers)), {})
