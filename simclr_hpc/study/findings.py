"""The report's judgement: every encoder against its baselines, each finding's verdict, and what the encoders'
contrastive properties say about their fine-tuned accuracy. Summaries only (rows -> dataclasses); ``render.py`` formats.

* **Baselines** (``plan.py`` adds them): for each encoder cell (fine-tune: protocol x label fraction x head layer;
  transfer: protocol x target x k) the random-init encoder of its architecture and the raw-pixel probe on the same split
  and seeds. Margins are paired by seed (``verdict.paired_difference``); a cell whose mean is below a baseline's is
  flagged in the headline.
* **Verdicts** of the paper's three claims (``verdict.verdict``; fewer than 3 seeds is inconclusive by rule):
  fine-tuning from the first projection-head layer beats the encoder output at the smallest label fraction (SimCLRv2's
  claim, the paper's first analysis; effect: top-1 at layer 1 - layer 0, per seed, averaged over encoders); distillation
  gains more from a teacher of the same base model (effect: same-base - cross-base gain per (student, seed) unit);
  transfer is better with fewer classes (effect: per seed, the OLS slope of chance-normalised top-1 on log2 k within a
  dataset, averaged over encoders; claimed negative).
* **Properties vs fine-tuning**: one point per (encoder, seed): the pretrain run's final monitor numbers (kNN top-1,
  alignment, uniformity) against that seed's linear fine-tune top-1 at head layer 0, per label fraction; Spearman's rho
  with a bootstrap interval (``stats.spearman_interval``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from simclr_hpc.study.aggregate import Row
from simclr_hpc.study.stats import Interval, ols_slope, spearman_interval, t_interval
from simclr_hpc.study.summaries import accuracy, eval_sizes, summarize_distill
from simclr_hpc.study.verdict import Estimate, Verdict, paired_difference, verdict

PROPERTIES = ("knn_top1_k200", "alignment", "uniformity")
"""Pretraining properties related to fine-tuned accuracy."""


def _done(rows: list[Row], **match) -> list[Row]:
    return [r for r in rows if r.status == "done" and r.top1 is not None
            and all(getattr(r, k) == v for k, v in match.items())]


@dataclass
class Margin:
    """An encoder cell against one baseline under the same protocol, split and seeds."""

    baseline: str
    """``random`` or ``pixels``."""
    top1: Estimate
    """The baseline's top-1."""
    margin: Estimate
    """Encoder - baseline, paired by seed."""

    @property
    def below(self) -> bool:
        return self.margin.n > 0 and self.margin.mean < 0


@dataclass
class EncoderCell:
    """One encoder's top-1 (and kNN) in one protocol/split, with its margins over the baselines."""

    section: str
    encoder: str
    protocol: str
    where: str
    """The split: ``10% labels, head layer 0`` or ``shapes20 k=5``."""
    top1: Estimate
    knn: Estimate | None
    eval_images: str
    margins: list[Margin]
    runs: list[Row]


def _cell_key(r: Row) -> tuple:
    if r.section == "finetune":
        return ("finetune", r.protocol, r.dataset, r.label_fraction, r.head_layer)
    return ("transfer", r.protocol, r.dataset, r.kind, r.k)


def _where(key: tuple) -> str:
    if key[0] == "finetune":
        return f"{key[2]}, {100 * key[3]:g}% labels, head layer {key[4]}"
    return f"{key[2]} {'k=' + str(key[4]) if key[3] == 'within' else 'all classes'}"


def _by_seed(rows: list[Row]) -> dict[int, float]:
    """Mean top-1 per seed (several class subsets of one seed count once)."""
    per: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        per[r.seed].append(r.top1)
    return {s: sum(v) / len(v) for s, v in per.items()}


def summarize_baselines(rows: list[Row]) -> list[EncoderCell]:
    """Every encoder cell of fine-tuning and transfer against the random and pixel baselines of its split."""
    done = [r for r in _done(rows) if r.section in ("finetune", "transfer")]
    encoders = [r for r in done if not r.baseline]
    cells: dict[tuple, list[Row]] = defaultdict(list)
    for r in encoders:
        cells[(r.encoder, *_cell_key(r))].append(r)
    out = []
    for (enc, *key), runs in sorted(cells.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        key = tuple(key)
        # Baselines sit at head layer 0 (pixels always linear); a random baseline must share the architecture.
        base_key = key[:-1] + (0,) if key[0] == "finetune" else key
        margins = []
        for name in ("random", "pixels"):
            base = [r for r in done if r.baseline == name and _cell_key(r)[2:] == base_key[2:]
                    and (name == "pixels" or (r.protocol == key[1] and r.arch == runs[0].arch))]
            if base:
                margins.append(Margin(name, accuracy(base), paired_difference(_by_seed(runs), _by_seed(base))))
        knn = accuracy(runs, "knn_top1_k200")
        out.append(EncoderCell(key[0], enc, key[1], _where(key), accuracy(runs), knn if knn.n else None,
                               eval_sizes(runs), margins, runs))
    return out


def _seeds(rows: list[Row]) -> int:
    return len({r.seed for r in rows})


def _finetune_verdict(rows: list[Row]) -> Verdict | None:
    ft = [r for r in _done(rows, section="finetune") if not r.baseline]
    layers, fracs = {r.head_layer for r in ft}, sorted({r.label_fraction for r in ft})
    if not {0, 1} <= layers:
        return None
    low = [r for r in ft if r.label_fraction == fracs[0]]
    by_layer = {layer: _by_seed([r for r in low if r.head_layer == layer]) for layer in (0, 1)}
    effect = paired_difference(by_layer[1], by_layer[0])
    return verdict(f"fine-tuning from head layer 1 beats layer 0 at {100 * fracs[0]:g}% labels", effect, +1)


def _distill_verdict(rows: list[Row]) -> Verdict | None:
    s = summarize_distill(rows)
    if s is None or s.test is None:
        return None
    units = [p.split("/s")[-1] for p in s.test.pairs]
    diff = s.test.diff
    effect = Estimate(diff.mean, max(-1.0, diff.lo), min(1.0, diff.hi), diff.n, "paired t-interval over student x seed")
    return verdict("distillation gains more from a same-base teacher", effect, +1, n_seeds=len(set(units)))


def _transfer_verdict(rows: list[Row]) -> Verdict | None:
    tr = [r for r in _done(rows, section="transfer", kind="within") if not r.baseline and r.chance_norm_top1 is not None]
    slopes: dict[int, list[float]] = defaultdict(list)
    for (seed, enc, dataset) in sorted({(r.seed, r.encoder, r.dataset) for r in tr}):
        sel = [r for r in tr if (r.seed, r.encoder, r.dataset) == (seed, enc, dataset)]
        fit = ols_slope([r.k for r in sel], [r.chance_norm_top1 for r in sel])
        if fit is not None:
            slopes[seed].append(fit.slope)
    if not slopes:
        return None
    per_seed = {s: sum(v) / len(v) for s, v in slopes.items()}
    effect = paired_difference(per_seed, {s: 0.0 for s in per_seed})
    effect.method = "t-interval over seeds of the per-seed OLS slope (chance-normalised top-1 per doubling of k)"
    return verdict("transfer is better with fewer classes", effect, -1)


def summarize_verdicts(rows: list[Row]) -> list[Verdict]:
    """The verdict of each of the paper's claims the study can test."""
    found = (_finetune_verdict(rows), _distill_verdict(rows), _transfer_verdict(rows))
    return [v for v in found if v is not None]


@dataclass
class PretrainCell:
    """One encoder's pretraining over its seeds: the monitor's final numbers and what monitoring cost."""

    encoder: str
    knn: Estimate
    """kNN top-1 (k = 200) of the final encoder on the monitor's held-out queries."""
    eval_images: str
    alignment: Interval
    uniformity: Interval
    embed_std: Interval
    positive_rank1: Interval
    monitor_share: Interval
    """``monitor_s_total / wall_s``: the fraction of the run's time spent monitoring."""
    runs: list[Row]


def summarize_pretrain(rows: list[Row]) -> list[PretrainCell]:
    """Every encoder whose pretrain runs were monitored (``pretrain.monitor_every_steps`` > 0)."""
    done = [r for r in rows if r.section == "pretrain" and r.status == "done" and r.knn_top1_k200 is not None]
    out = []
    for enc in sorted({r.encoder for r in done}):
        runs = [r for r in done if r.encoder == enc]
        out.append(PretrainCell(
            enc, accuracy(runs, "knn_top1_k200"), eval_sizes(runs), *(t_interval([getattr(r, k) for r in runs])
                                for k in ("alignment", "uniformity", "embed_std", "positive_rank1")),
            t_interval([r.monitor_s_total / r.wall_s for r in runs if r.monitor_s_total and r.wall_s]), runs))
    return out


@dataclass
class PropertyCorrelation:
    """Spearman's rho of one pretraining property against fine-tuned top-1 at one label fraction."""

    prop: str
    label_fraction: float
    protocol: str
    rho: Interval
    points: list[tuple[float, float, str]]
    """(property, top-1, ``encoder/s<seed>``)."""


def summarize_properties(rows: list[Row]) -> list[PropertyCorrelation]:
    """Each property of each (encoder, seed)'s pretrain run against its fine-tuned top-1 at head layer 0."""
    pre = {(r.encoder, r.seed): r for r in rows if r.section == "pretrain" and r.status == "done"}
    ft = [r for r in _done(rows, section="finetune") if not r.baseline and r.head_layer == 0]
    out = []
    for protocol, fraction in sorted({(r.protocol, r.label_fraction) for r in ft}):
        cell = [r for r in ft if (r.protocol, r.label_fraction) == (protocol, fraction)]
        for prop in PROPERTIES:
            pts = [(getattr(pre[(r.encoder, r.seed)], prop), r.top1, f"{r.encoder}/s{r.seed}") for r in cell
                   if (r.encoder, r.seed) in pre and getattr(pre[(r.encoder, r.seed)], prop) is not None]
            if len(pts) >= 3:
                rho = spearman_interval([p[0] for p in pts], [p[1] for p in pts])
                out.append(PropertyCorrelation(prop, fraction, protocol, rho, pts))
    return out
