"""Each stage's recommended recipe: the defaults a stage run starts from when its stage is known.

A run's config is built as: the field defaults of ``config.py`` (pretraining's: LARS at lr 0.3 x B/256), then the
recipe of its stage and protocol below, then the user's file, then ``--set``. So ``run transfer`` with no ``-c`` trains a
linear probe that converges instead of a probe with LARS at pretraining's learning rate. The recipe is chosen by the
stage and by the protocol the user's layers select (``finetune.protocol`` / ``transfer.protocol``, default linear).

* **linear** (finetune and transfer): AdamW, lr 0.01 with no batch scaling, cosine decay without warmup over 1,000
  steps of 256 features, decoupled weight decay 0.3, on features standardised with the training set's per-dimension
  mean and std. Standardising makes one learning rate fit any encoder (or raw pixels); 1,000 steps are 64 epochs of
  4,000 images and cost seconds, since the frozen encoder's features are computed once. Measured on mnist5k at 16 px
  (features of a random ResNet-18 at 1/8 width, and raw pixels; 10 % and 100 % of the labels): within 3 points of an
  L2-regularised logistic regression fitted to convergence by L-BFGS with its penalty tuned on the test set, and
  within 1.5 points in three of the four cases.
* **full** (every layer trained): SGD with momentum 0.9 at lr 0.05 x B/256, no warmup, no weight decay: SimCLR's
  fine-tuning recipe (Chen et al. 2020, appendix B.5), without Nesterov. The number of steps stays the user's budget.
* **distill**: SGD with momentum 0.9 at lr 0.1 x B/256, weight decay 1e-5, 10 warmup steps, as
  ``configs/distill/default.yaml`` (whose 100 warmup steps suit its 5,000-step budget, not the default 100 steps).
* **pretrain** has no recipe: the field defaults are pretraining's (SimCLR's LARS recipe).

This module imports nothing from the project: ``config.py`` imports it.
"""

from __future__ import annotations

LINEAR_PROBE: dict = {
    "optim": {"name": "adamw", "base_lr": 0.01, "lr_scaling": "none", "weight_decay": 0.3, "warmup_steps": 0,
              "min_lr_ratio": 0.0},
    "train": {"steps": 1000, "global_batch": 256, "ckpt_every_steps": 1000, "log_every_steps": 50},
}
FULL_FINETUNE: dict = {
    "optim": {"name": "sgd", "base_lr": 0.05, "lr_scaling": "linear", "base_batch": 256, "momentum": 0.9,
              "weight_decay": 0.0, "warmup_steps": 0},
}
DISTILL: dict = {
    "optim": {"name": "sgd", "base_lr": 0.1, "lr_scaling": "linear", "base_batch": 256, "momentum": 0.9,
              "weight_decay": 1e-5, "warmup_steps": 10},
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
