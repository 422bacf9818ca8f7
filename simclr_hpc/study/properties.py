"""The encoders' contrastive properties: the pretraining monitor's final numbers, and how they relate to fine-tuned
accuracy across encoders.

The unit of a property correlation is the encoder: every encoder of the fine-tuning section is one point, its property
and its fine-tuned top-1 (head layer 0) each averaged over seeds first, and Spearman's rho gets a percentile
bootstrap interval that resamples encoders (``stats.spearman_interval``) and an exact permutation p
(``stats.spearman_p``). Seeds of one encoder are not independent points: a study that wants to say something about a
property varies it over several encoders (at least 6: with 4, even a perfect rho has p = 0.083).
"""

from __future__ import annotations

from dataclasses import dataclass

from simclr_hpc.study.aggregate import Row
from simclr_hpc.study.cells import accuracy, eval_sizes, finished, group, per_seed, seed_mean
from simclr_hpc.study.stats import Interval, spearman_interval, spearman_p
from simclr_hpc.study.verdict import Estimate

PROPERTIES = ("knn_top1_k200", "alignment", "uniformity", "alignment_h", "uniformity_h")
"""Pretraining properties related to fine-tuned accuracy (columns of a pretrain run's row); ``_h``: of the encoder
output h rather than the projection z."""
MIN_ENCODERS = 3


@dataclass
class PretrainCell:
    """One encoder's pretraining over its seeds: the monitor's final numbers and what monitoring cost."""

    encoder: str
    knn: Estimate
    """kNN top-1 (k = 200) of the final encoder on the monitor's held-out queries."""
    eval_images: str
    alignment: Estimate
    uniformity: Estimate
    embed_std: Estimate
    positive_rank1: Estimate
    monitor_share: Estimate
    """``monitor_s_total / wall_s``: the fraction of the run's time spent monitoring."""
    runs: list[Row]


def _pretrain_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.section == "pretrain" and r.status == "done" and r.knn_top1_k200 is not None]


def summarize_pretrain(rows: list[Row], study=None) -> list[PretrainCell]:
    """Every encoder whose pretrain runs were monitored (``pretrain.monitor_every_steps`` > 0)."""
    out = []
    for encoder, runs in sorted(group(_pretrain_rows(rows), lambda r: r.encoder).items()):
        out.append(
            PretrainCell(
                encoder,
                accuracy(runs, "knn_top1_k200"),
                eval_sizes(runs),
                *(seed_mean(runs, key) for key in ("alignment", "uniformity", "embed_std", "positive_rank1")),
                seed_mean(runs, lambda r: r.monitor_s_total / r.wall_s if r.monitor_s_total and r.wall_s else None),
                runs,
            )
        )
    return out


@dataclass
class PropertyCorrelation:
    """Spearman's rho of one pretraining property against fine-tuned top-1 at one protocol and label fraction."""

    prop: str
    label_fraction: float
    protocol: str
    rho: Interval
    """rho with its bootstrap interval over encoders; ``n`` = encoders."""
    p: float
    """Two-sided p of rho (exact permutation below 9 encoders)."""
    points: list[tuple[float, float, str]]
    """(property, top-1, encoder), each the mean over the encoder's seeds."""
    seeds: int
    """Seeds averaged per point (the most any encoder has)."""


def summarize_properties(rows: list[Row], study=None) -> list[PropertyCorrelation]:
    """Each property against fine-tuned top-1 at head layer 0, one point per encoder, per (protocol, fraction)."""
    pretrain = group(_pretrain_rows(rows), lambda r: r.encoder)
    tuned = [r for r in finished(rows, section="finetune") if r.head_layer == 0]
    out = []
    for (protocol, fraction), runs in sorted(group(tuned, lambda r: (r.protocol, r.label_fraction)).items()):
        by_encoder = group(runs, lambda r: r.encoder)
        for prop in PROPERTIES:
            points = []
            for encoder, mine in sorted(by_encoder.items()):
                values = per_seed(pretrain.get(encoder, []), prop)
                if values:
                    top1 = per_seed(mine)
                    points.append((sum(values.values()) / len(values), sum(top1.values()) / len(top1), encoder))
            if len(points) >= MIN_ENCODERS:
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                seeds = max(len(per_seed(by_encoder[p[2]])) for p in points)
                out.append(
                    PropertyCorrelation(
                        prop, fraction, protocol, spearman_interval(xs, ys), spearman_p(xs, ys), points, seeds
                    )
                )
    return out
