"""Markdown of the report's judgement: the verdicts (also written as ``verdicts.md`` for READMEs to include), every
encoder against its baselines, the pretraining monitor and properties vs fine-tuned accuracy. Formatting only.
"""

from __future__ import annotations

import math
from pathlib import Path

from simclr_hpc.study import plots
from simclr_hpc.study.baselines import EncoderCell, Overview, overview
from simclr_hpc.study.findings import VerdictSummary
from simclr_hpc.study.properties import PretrainCell, PropertyCorrelation
from simclr_hpc.study.render import Section, fmt_ci, link_runs
from simclr_hpc.study.stats import POWER
from simclr_hpc.study.verdict import MIN_SEEDS, Verdict

INTERVALS = (
    "Accuracies: mean over seeds (each seed's runs averaged first) with a 95% t-interval on the logit of the "
    "per-seed accuracies (each moved by half an image, (p n + 1/2) / (n + 1), so 0% and 100% stay finite), "
    "mapped back, so it stays inside [0, 100]; margins: mean of per-seed differences with a paired 95% "
    "t-interval; n counts seeds."
)


def _effect(v: Verdict, value: float, signed: bool = True) -> str:
    """A value in the finding's unit: points with one decimal, other units with two."""
    if math.isnan(value):
        return "n/a"
    digits = 1 if v.effect.unit == "pp" else 2
    return f"{v.effect.scale * value:{'+' if signed else ''}.{digits}f}"


def effect_text(v: Verdict) -> str:
    """``+1.2 [-0.3, +2.7] pp`` / ``-0.21 [-0.30, -0.12] d' per doubling``."""
    t = v.test
    if t.n < 2:
        return f"{_effect(v, t.mean)} {v.effect.unit} (no interval)"
    return f"{_effect(v, t.mean)} [{_effect(v, t.lo)}, {_effect(v, t.hi)}] {v.effect.unit}"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.2g}"


def verdict_table(s: VerdictSummary) -> list[str]:
    """The verdicts as one table: what READMEs include verbatim (``verdicts.md``)."""
    lines = [
        "| the paper's finding | primary contrast (one value per seed) | verdict | effect [95% CI] | n | Holm p | "
        f"equivalence p (margin) | MDE at {POWER:.0%} power | seeds the effect needs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in s.verdicts:
        e, t = v.effect, v.test
        margin = f"{_p(v.p_equivalence_holm)} (±{_effect(v, e.margin, False)} {e.unit})"
        needs = "n/a" if v.seeds_needed is None else str(v.seeds_needed)
        lines.append(
            f"| {e.finding} | {e.contrast} | **{v.label}** | {effect_text(v)} | {_seeds(t.n)} (each the mean "
            f"over {e.averaged}) | {_p(v.p_holm)} | {margin} | {_effect(v, v.mde, False)} {e.unit} | "
            f"{needs} |"
        )
    return lines


def render_verdicts(s: VerdictSummary, out: Path) -> Section:
    """The verdict of each finding: a headline bullet each, the table, the rules and the caveats."""
    m = len(s.verdicts)
    lines = [
        "## Verdicts",
        "",
        *verdict_table(s),
        "",
        f"Each finding is decided on its primary contrast (declared in the study file) with the seed as the unit. "
        f"*reproduced* / *contradicted*: a two-sided t-test over seeds rejects 0 at family-wise α = {s.alpha:g} "
        f"after Holm's adjustment over the {m} finding(s), on the paper's side / the other; *absent*: otherwise, "
        "an equivalence test (two one-sided t-tests, Holm-adjusted) shows the effect within its margin; "
        f"*inconclusive*: neither, or fewer than {MIN_SEEDS} seeds. MDE: the smallest true effect this many seeds "
        f"detect with {POWER:.0%} power at α/{m} (the strictest Holm step) given the observed spread across "
        "seeds; seeds the effect needs: for the observed effect at that power and level.",
        "",
    ]
    for v in s.verdicts:
        lines += [f"- {v.effect.finding}: {v.reason}." + "".join(f" Note: {n}." for n in v.effect.notes)]
    lines.append("")
    headline = [
        f"- **{v.label}**: {v.effect.finding}; {effect_text(v)} ({v.effect.contrast}; n = {_seeds(v.test.n)}, "
        f"Holm p = {_p(v.p_holm)}, MDE {_effect(v, v.mde, False)} {v.effect.unit})"
        for v in s.verdicts
    ]
    return Section(lines, headline=headline, snippets={"verdicts": verdict_table(s)})


def _cell_name(c: EncoderCell) -> str:
    return f"{c.encoder} ({c.split.section} {c.split.protocol}, {c.where})"


def render_baselines(cells: list[EncoderCell], out: Path) -> Section:
    """Every encoder cell beside its random-init and raw-pixel baselines, with margins and what they show."""
    lines = [
        "## Encoders against their baselines",
        "",
        "Same protocol, split and seeds: `random` = a random-init encoder of the same architecture (under `full`, "
        "that network trained from scratch), `pixels` = a linear classifier on the raw pixels. kNN: cosine, "
        f"k = 200, on the same frozen features. {INTERVALS} **below** / **above**: the margin's interval excludes "
        "0; otherwise the cell is not distinguishable from that baseline.",
        "",
        "| encoder | stage | protocol | split | eval images | n | top-1 % | kNN top-1 % | random % | "
        "margin vs random pp | pixels % | margin vs pixels pp | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        by = {m.baseline: m for m in c.margins}
        cols = []
        for name in ("random", "pixels"):
            m = by.get(name)
            flag = " **(below)**" if m and m.below else " (above)" if m and m.above else ""
            cols += [fmt_ci(m.top1) if m else "not run", fmt_ci(m.margin, True) + flag if m else ""]
        lines.append(
            f"| {c.encoder} | {c.split.section} | {c.split.protocol} | {c.where} | {c.eval_images} | "
            f"{c.top1.n} | {fmt_ci(c.top1)} | {fmt_ci(c.knn) if c.knn else 'n/a'} | {' | '.join(cols)} | "
            f"{link_runs(c.runs, out)} |"
        )
    same = [f"{_cell_name(c)} vs {m.baseline}" for c in cells for m in c.margins if m.indistinguishable]
    lines += ["", f"Not distinguishable from their baseline ({len(same)}): " + ("; ".join(same) or "none") + ".", ""]
    headline = [
        f"- **below its {m.baseline} baseline**: {_cell_name(c)} top-1 {fmt_ci(c.top1)}% vs {m.baseline} "
        f"{fmt_ci(m.top1)}%: margin {fmt_ci(m.margin, True)} pp"
        for c in cells
        for m in c.margins
        if m.below
    ]
    return Section(lines, headline=headline, snippets={"findings": _baseline_bullets(overview(cells))})


def _baseline_bullets(views: list[Overview]) -> list[str]:
    """One bullet per split: the encoders' range against each baseline, and what the margins show."""
    out = []
    for v in views:
        base = "; ".join(
            f"{name} {fmt_ci(top1)} % ({v.counts[name][0]} encoder(s) above it, {v.counts[name][1]} below, "
            f"{v.counts[name][2]} not distinguishable)"
            for name, top1 in v.baselines.items()
        )
        low, high = v.lowest, v.highest
        span = (
            f"{fmt_ci(low.top1)} %"
            if low is high
            else f"{fmt_ci(low.top1)} % ({low.encoder}) to {fmt_ci(high.top1)} % ({high.encoder})"
        )
        out.append(
            f"- {v.split.section} {v.split.protocol}, {v.split.where} ({low.eval_images} eval images): "
            f"{len(v.encoders)} encoder(s) {span}; {base}."
        )
    return out


def _num(iv, digits: int = 3) -> str:
    return fmt_ci(iv, False, 1.0, digits)


def render_pretrain(cells: list[PretrainCell], out: Path) -> Section:
    """The final monitor numbers of every monitored encoder."""
    lines = [
        "## Pretraining: online monitor of the final encoders",
        "",
        "kNN top-1 (cosine, k = 200, exp(s/0.07) votes) of held-out images against a fixed labelled bank; "
        "alignment (lower = positives closer), uniformity (t = 2; 0 = collapsed, about -4 = spread out), std of "
        "the normalised projections (0 = collapsed; about 1/sqrt(d) when spread) and positive rank-1 on fixed "
        "held-out view pairs; mean [95% t-interval] over seeds. Monitor cost = its share of the run's wall time.",
        "",
        "| encoder | n | eval images | kNN top-1 % | alignment | uniformity | std | positive rank-1 | "
        "monitor cost % | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.encoder} | {c.knn.n} | {c.eval_images} | {fmt_ci(c.knn)} | {_num(c.alignment)} | "
        f"{_num(c.uniformity)} | {_num(c.embed_std, 4)} | {_num(c.positive_rank1)} | {fmt_ci(c.monitor_share)} | "
        f"{link_runs(c.runs, out)} |"
        for c in cells
    ]
    return Section(lines + [""])


def render_properties(corrs: list[PropertyCorrelation], out: Path) -> Section:
    """Spearman's rho of each pretraining property against fine-tuned top-1 over encoders, and the plot."""
    lines = [
        "### Properties of contrastive learning vs fine-tuned accuracy",
        "",
        "One point per encoder: its pretrain runs' final monitor numbers and its fine-tuned top-1 (head layer 0), "
        "each averaged over seeds. Spearman's rho with a 95% percentile-bootstrap interval resampling encoders "
        "(2,000 resamples) and its two-sided p (exact over every pairing below 9 encoders). Vary one property at "
        "a time over several encoders through their `set:` (`pretrain.temperature`, `train.global_batch`, "
        "`model.proj_layers`, `data.crop_min_scale`, `data.color_strength`, `train.steps`).",
        "",
        "| property | protocol | label fraction | encoders | seeds per point | Spearman rho [95% CI] | p |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.prop} | {c.protocol} | {100 * c.label_fraction:g}% | {len(c.points)} | {c.seeds} | "
        f"{_num(c.rho, 2)} | {'n/a' if math.isnan(c.p) else f'{c.p:.2g}'} |"
        for c in corrs
    ]
    lines.append("")
    if not corrs:
        return Section(lines + ["Needs at least 3 monitored encoders (`pretrain.monitor_every_steps` > 0).", ""])
    path = plots.properties(corrs, out / "properties.png")
    return Section(
        lines + [f"![contrastive properties vs fine-tuned accuracy]({path.name})", ""],
        [path],
        snippets={"findings": _property_bullets(corrs)},
    )


def _property_bullets(corrs: list[PropertyCorrelation]) -> list[str]:
    """Per property and protocol: rho (and p) at each label fraction, over the encoders."""
    out = []
    for prop, protocol in sorted({(c.prop, c.protocol) for c in corrs}):
        mine = sorted((c for c in corrs if (c.prop, c.protocol) == (prop, protocol)), key=lambda c: c.label_fraction)
        parts = [
            f"{_num(c.rho, 2)} at {100 * c.label_fraction:g}% (p {'n/a' if math.isnan(c.p) else f'{c.p:.2g}'})"
            for c in mine
        ]
        out.append(
            f"- {prop} vs fine-tuned top-1 ({protocol}, {len(mine[0].points)} encoders): Spearman rho "
            + "; ".join(parts)
            + "."
        )
    return out
