"""The builder that a study's section expanders (``plan.py``) add their runs to, and the baseline runs a study plans
beside its encoders.

``PlanBuilder`` builds each run's config from its layers (defaults, dataset, section, cell) and keeps every problem as
one line. The baselines (``finetune.baselines``, ``transfer.baselines``): a random-init encoder of each encoder
architecture (under ``full``, that network trained from scratch) and a linear probe on raw pixels, with the seeds,
protocols and splits of the runs they are compared with and no dependency (``finetune_baselines``,
``transfer_baselines``, called by ``plan.py``'s fine-tune and transfer expanders). Names are in ``plan.py``'s
docstring; ``findings.py`` sets each encoder beside them.
"""

from __future__ import annotations

from itertools import product

from simclr_hpc import rundir
from simclr_hpc.config import ConfigError, build_config, stage_problems
from simclr_hpc.recipes import stage_recipe
from simclr_hpc.study.runs import RunSpec, fmt_number, safe_run_name
from simclr_hpc.study.schema import Study, nest_overrides

MODEL_KEYS = ("backbone", "cifar_stem", "width", "proj_layers", "proj_hidden_dim", "proj_dim")
"""``model.*`` keys of an encoder that every run loading it must share."""


class PlanBuilder:
    """Collects a study's runs: each run's config is built from its layers (defaults, dataset, section, cell), and every
    problem is kept as one line so a bad study file reports all of them at once."""

    def __init__(self, study: Study, where: str):
        self.study = study
        self.where = where
        self._problems: list[str] = []
        self._seen_problem: set[str] = set()
        self._run_problems: dict[str, list[str]] = {}
        """config error -> the runs it hit: one bad study value is one line, not one per planned run."""
        self.runs: list[RunSpec] = []
        self._keys: set[str] = set()

    def nest(self, overrides: dict, field_name: str) -> dict:
        try:
            return nest_overrides(overrides)
        except ValueError as exc:
            self.problem(f"{self.where}: {field_name}: {exc}")
            return {}

    def problem(self, line: str) -> None:
        if line not in self._seen_problem:
            self._seen_problem.add(line)
            self._problems.append(line)

    @property
    def problems(self) -> list[str]:
        """Every problem, one line each; a run-config error shared by many runs names the first and counts the rest."""
        lines = list(self._problems)
        for error, keys in self._run_problems.items():
            more = f" and {len(keys) - 1} more run(s)" if len(keys) > 1 else ""
            lines.append(f"{self.where}: run config of {keys[0]}{more}: {error}")
        return lines

    def dataset_layer(self, dataset: str) -> dict:
        spec = self.study.datasets[dataset]
        return {**self.nest(spec.set, f"datasets.{dataset}.set")}

    def encoder_model(self, encoder: str) -> dict:
        """``model.*`` of an encoder's pretrain run: every run that loads the encoder needs the same architecture."""
        layers = [
            self.nest(self.study.defaults, "defaults"),
            self.nest(self.study.pretrain.set, "pretrain.set"),
            self.dataset_layer(self.study.encoders[encoder].dataset),
            self.nest(self.study.encoders[encoder].set, f"encoders.{encoder}.set"),
        ]
        model: dict = {}
        for layer in layers:
            model.update({k: v for k, v in layer.get("model", {}).items() if k in MODEL_KEYS})
        return {"model": model} if model else {}

    def add(
        self,
        stage: str,
        name: str,
        dataset: str,
        layers: list[dict],
        forced: dict,
        depends_on: tuple[str, ...],
        labels: dict,
    ) -> RunSpec | None:
        try:
            name = safe_run_name(name)
        except ValueError as exc:
            self.problem(f"{self.where}: {labels.get('section', stage)}: {exc}")
            return None
        key = f"{stage}/{name}"
        if key in self._keys:
            self.problem(
                f"{self.where}: two runs of the study are both named {key}; rename a teacher, student or encoder"
            )
            return None
        study = self.study
        wiring = {
            "run": {
                "name": name,
                "study": study.name,
                "root": study.root,
                "seed": labels.get("run_seed", labels["seed"]),
            },  # a student's encoder: another seed than its unit
            "data": {"shards": str(study.shards_dir(dataset))},
        }
        all_layers = [self.nest(study.defaults, "defaults"), self.dataset_layer(dataset), *layers, forced, wiring]
        try:
            cfg = build_config([stage_recipe(stage, all_layers), *all_layers])  # the stage's recipe under the study
            problems = stage_problems(stage, cfg) + _head_problems(stage, cfg)
        except ConfigError as err:
            problems = err.lines
        for line in problems:
            self._run_problems.setdefault(line, []).append(key)
        if problems:
            return None
        labels = {key: value for key, value in labels.items() if key != "run_seed"}
        run = RunSpec(stage, name, cfg, depends_on, {**labels, "dataset": dataset})
        self._keys.add(key)
        self.runs.append(run)
        return run

    def arch(self, encoder: str) -> str:
        """A readable key of the encoder's architecture: what its random-init baseline must share."""
        model = self.encoder_model(encoder).get("model", {})
        return ",".join(f"{k}={model[k]}" for k in sorted(model)) or "default"

    def architectures(self, encoders: list[str], dataset_of) -> dict[tuple[str, str], str]:
        """(dataset, architecture) -> the first of ``encoders`` with it: one random baseline per group."""
        groups: dict[tuple[str, str], str] = {}
        for enc in encoders:
            groups.setdefault((dataset_of(enc), self.arch(enc)), enc)
        return groups

    def pretrain_key(self, encoder: str, seed: int) -> str:
        return f"pretrain/{safe_run_name(encoder, f's{seed}')}"

    def pretrain_dir(self, encoder: str, seed: int) -> str:
        stage, _, name = self.pretrain_key(encoder, seed).partition("/")
        return str(rundir.run_dir(self.study.root, self.study.name, stage, name))


def _head_problems(stage: str, cfg) -> list[str]:
    """A fine-tune of a study encoder starts at a layer of its projection head: its config carries the encoder's
    ``model.*`` (``encoder_model``), so a layer beyond the head is refused here, not by every fine-tune at run time."""
    if stage == "finetune" and cfg.finetune.from_head_layer > cfg.model.proj_layers:
        return [
            f"finetune.from_head_layer: {cfg.finetune.from_head_layer} but the encoder's projection head has "
            f"{cfg.model.proj_layers} layer(s) (model.proj_layers); use 0..{cfg.model.proj_layers}"
        ]
    return []


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
            b.add(
                "finetune",
                f"random-{enc}-lf{fmt_number(fraction)}-h0-{protocol}-s{seed}",
                dataset,
                [b.encoder_model(enc), section],
                {"finetune": {**cell, "encoder": "random", "protocol": protocol}},
                (),
                {**labels, "encoder": "random", "baseline": "random", "arch": arch, "protocol": protocol},
            )
        for dataset in dict.fromkeys(d for d, _ in groups) if "pixels" in ft.baselines else []:
            b.add(
                "finetune",
                f"pixels-{dataset}-lf{fmt_number(fraction)}-linear-s{seed}",
                dataset,
                [section],
                {"finetune": {**cell, "encoder": "pixels", "protocol": "linear"}},
                (),
                {**labels, "encoder": "pixels", "baseline": "pixels", "protocol": "linear"},
            )


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
            b.add(
                "transfer",
                f"random-{enc}-{part}-{protocol}-s{seed}",
                dataset,
                [b.encoder_model(enc), section],
                {"transfer": {**forced, "encoder": "random", "protocol": protocol}},
                (),
                {**labels, "encoder": "random", "baseline": "random", "arch": arch, "protocol": protocol},
            )
        if "pixels" in tr.baselines:
            b.add(
                "transfer",
                f"pixels-{part}-linear-s{seed}",
                dataset,
                [section],
                {"transfer": {**forced, "encoder": "pixels", "protocol": "linear"}},
                (),
                {**labels, "encoder": "pixels", "baseline": "pixels", "protocol": "linear"},
            )
