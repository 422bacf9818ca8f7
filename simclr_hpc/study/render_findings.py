"""Markdown of the report's judgement (``findings.py``): verdicts and baseline flags for the headline, the pretraining
monitor table, every encoder against its baselines, and contrastive properties vs fine-tuned accuracy. Formatting only.
"""

from __future__ import annotations

from pathlib import Path

from simclr_hpc.study import plots
from simclr_hpc.study.findings import EncoderCell, PretrainCell, PropertyCorrelation
from simclr_hpc.study.render import Section, fmt_ci, link_runs
from simclr_hpc.study.stats import Interval
from simclr_hpc.study.verdict import MIN_SEEDS, Verdict

INTERVALS = ("Accuracies: mean over seeds with a 95% t-interval on the logit of the per-seed accuracies (each moved by "
             "half an image, (p n + 1/2) / (n + 1), so 0% and 100% stay finite), mapped back, so it stays inside "
             "[0, 100]; margins and effects: mean of per-seed differences with a paired 95% t-interval.")


def _num(iv: Interval, digits: int = 3) -> str:
    if iv.n == 0:
        return "n/a"
    if iv.n < 2:
        return f"{iv.mean:.{digits}f}"
    return f"{iv.mean:.{digits}f} [{iv.lo:.{digits}f}, {iv.hi:.{digits}f}]"


def headline(verdicts: list[Verdict], cells: list[EncoderCell]) -> list[str]:
    """One bullet per verdict (with its effect and interval), then one per encoder number below a baseline."""
    lines = [f"- **{v.label}** ({v.reason}): {v.finding}; effect {fmt_ci(v.effect, True)} pp, {v.effect.method}, "
             f"n={v.effect.n}" for v in verdicts]
    for c in cells:
        for m in c.margins:
            if m.below:
                lines.append(f"- **below its {m.baseline} baseline**: {c.encoder} ({c.section} {c.protocol}, "
                             f"{c.where}) top-1 {fmt_ci(c.top1)}% vs {m.baseline} {fmt_ci(m.top1)}%: margin "
                             f"{fmt_ci(m.margin, True)} pp")
    if any("by rule" in v.reason for v in verdicts):
        lines.append(f"- With fewer than {MIN_SEEDS} seeds a finding is inconclusive by rule; add seeds to judge it.")
    return lines


def render_pretrain(cells: list[PretrainCell], out: Path) -> Section:
    """The final monitor numbers of every monitored encoder."""
    lines = ["## Pretraining: online monitor of the final encoders", "",
             "kNN top-1 (cosine, k = 200, exp(s/0.07) votes) of held-out images against a fixed labelled bank; "
             "alignment (lower = positives closer), uniformity (t = 2; 0 = collapsed, about -4 = spread out), std of "
             "the normalised projections (0 = collapsed; about 1/sqrt(d) when spread) and positive rank-1 on fixed "
             "held-out view pairs; mean [95% t-interval] over seeds. Monitor cost = its share of the run's wall time.",
             "", "| encoder | n | eval images | kNN top-1 % | alignment | uniformity | std | positive rank-1 | "
             "monitor cost % | runs |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c.encoder} | {c.knn.n} | {c.eval_images} | {fmt_ci(c.knn)} | {_num(c.alignment)} | "
              f"{_num(c.uniformity)} | {_num(c.embed_std, 4)} | {_num(c.positive_rank1)} | {fmt_ci(c.monitor_share)} | "
              f"{link_runs(c.runs, out)} |" for c in cells]
    return Section(lines + [""])


def render_baselines(cells: list[EncoderCell], out: Path) -> Section:
    """Every encoder cell beside its random-init and raw-pixel baselines, with margins."""
    lines = ["## Encoders against their baselines", "",
             "Same protocol, split and seeds: `random` = a random-init encoder of the same architecture (under `full`, "
             "that network trained from scratch), `pixels` = a linear classifier on the raw pixels. kNN: cosine, "
             f"k = 200, on the same frozen features. {INTERVALS} A margin below 0 is flagged in the headline.", "",
             "| encoder | stage | protocol | split | eval images | n | top-1 % | kNN top-1 % | random % | "
             "margin vs random pp | pixels % | margin vs pixels pp | runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        by = {m.baseline: m for m in c.margins}
        cols = []
        for name in ("random", "pixels"):
            m = by.get(name)
            flag = " **(below)**" if m and m.below else ""
            cols += [fmt_ci(m.top1) if m else "not run", fmt_ci(m.margin, True) + flag if m else ""]
        lines.append(f"| {c.encoder} | {c.section} | {c.protocol} | {c.where} | {c.eval_images} | {c.top1.n} | "
                     f"{fmt_ci(c.top1)} | {fmt_ci(c.knn) if c.knn else 'n/a'} | {' | '.join(cols)} | "
                     f"{link_runs(c.runs, out)} |")
    return Section(lines + [""])


def render_properties(corrs: list[PropertyCorrelation], out: Path) -> Section:
    """Spearman's rho of each pretraining property against fine-tuned top-1, per label fraction, and the plot."""
    lines = ["### Properties of contrastive learning vs fine-tuned accuracy", "",
             "One point per (encoder, seed): the pretrain run's final monitor numbers against that seed's fine-tuned "
             "top-1 (head layer 0). Spearman's rho with a 95% percentile-bootstrap interval over points (2,000 "
             "resamples). Vary encoders by `pretrain.temperature`, `train.global_batch` (negatives), "
             "`model.proj_layers`, `data.crop_min_scale` / `data.color_strength` or `train.steps` in their `set:`.", "",
             "| property | protocol | label fraction | points | Spearman rho [95% CI] |", "|---|---|---|---|---|"]
    lines += [f"| {c.prop} | {c.protocol} | {100 * c.label_fraction:g}% | {len(c.points)} | {_num(c.rho, 2)} |"
              for c in corrs]
    lines.append("")
    if not corrs:
        return Section(lines + ["Needs at least 3 monitored (encoder, seed) points "
                                "(`pretrain.monitor_every_steps` > 0).", ""])
    path = plots.properties(corrs, out / "properties.png")
    return Section(lines + [f"![contrastive properties vs fine-tuned accuracy]({path.name})", ""], [path])

