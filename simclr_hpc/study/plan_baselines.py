"""The baseline runs a study plans beside its encoders (``finetune.baselines``, ``transfer.baselines``): a random-init
encoder of each encoder architecture (under ``full``, that network trained from scratch) and a linear probe on raw
pixels, with the seeds, protocols and splits of the runs they are compared with and no dependency. Names are in
``plan.py``'s docstring; ``findings.py`` sets each encoder beside them.
"""

from __future__ import annotations

from itertools import product

from simclr_hpc.study.builder import PlanBuilder
from simclr_hpc.study.runs import fmt_number


def finetune_baselines(b: PlanBuilder) -> None:
    """seeds x label fractions x (random per (dataset, architecture) x protocols, pixels per dataset), head layer 0."""
    study, ft = b.study, b.study.finetune
    section = b.nest(ft.set, "finetune.set")
    groups = b.architectures(ft.encoders, lambda enc: ft.dataset or study.encoders[enc].dataset)
    for seed, fraction in product(study.seeds, ft.label_fractions):
        labels = {"section": "finetune", "seed": seed, "label_fraction": fraction, "head_layer": 0}
        cell = {"label_fraction": fraction, "from_head_layer": 0}
        protocols = [p for p in ft.protocols if fraction in ft.fractions(p)]
        for protocol, ((dataset, arch), enc) in product(protocols, groups.items() if "random" in ft.baselines else []):
            b.add("finetune", f"random-{enc}-lf{fmt_number(fraction)}-h0-{protocol}-s{seed}", dataset,
                  [b.encoder_model(enc), section], {"finetune": {**cell, "encoder": "random", "protocol": protocol}},
                  (), {**labels, "encoder": "random", "baseline": "random", "arch": arch, "protocol": protocol})
        for dataset in dict.fromkeys(d for d, _ in groups) if "pixels" in ft.baselines else []:
            b.add("finetune", f"pixels-{dataset}-lf{fmt_number(fraction)}-linear-s{seed}", dataset, [section],
                  {"finetune": {**cell, "encoder": "pixels", "protocol": "linear"}}, (),
                  {**labels, "encoder": "pixels", "baseline": "pixels", "protocol": "linear"})


def transfer_baselines(b: PlanBuilder, section: dict, targets: list) -> None:
    """Per seed and target: random per architecture x protocols, and pixels (linear)."""
    study, tr = b.study, b.study.transfer
    archs = {arch: enc for (_, arch), enc in b.architectures(tr.encoders, lambda enc: "").items()}
    if "random" not in tr.baselines:
        archs = {}
    for seed, (dataset, part, fields, target) in product(study.seeds, targets):
        labels = {"section": "transfer", "seed": seed, **target}
        forced = {"images_per_class": tr.images_per_class, **fields}
        for protocol, (arch, enc) in product(tr.protocols, archs.items()):
            b.add("transfer", f"random-{enc}-{part}-{protocol}-s{seed}", dataset, [b.encoder_model(enc), section],
                  {"transfer": {**forced, "encoder": "random", "protocol": protocol}}, (),
                  {**labels, "encoder": "random", "baseline": "random", "arch": arch, "protocol": protocol})
        if "pixels" in tr.baselines:
            b.add("transfer", f"pixels-{part}-linear-s{seed}", dataset, [section],
                  {"transfer": {**forced, "encoder": "pixels", "protocol": "linear"}}, (),
                  {**labels, "encoder": "pixels", "baseline": "pixels", "protocol": "linear"})
