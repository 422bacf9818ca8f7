"""The report's PNG plots, one per summary: the only module that knows matplotlib (Agg backend, imported on first use).

Each function draws one summary of ``summaries.py`` into ``path`` and returns ``path``; none computes a statistic.
"""

from __future__ import annotations

import math
from pathlib import Path

from simclr_hpc.study.summaries import DistillSummary, FinetuneSummary, TransferSummary


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def finetune(s: FinetuneSummary, path: Path) -> Path:
    """Top-1 by label fraction (log x), one line per head layer, one panel per (encoder, protocol)."""
    plt = _plt()
    groups = sorted({(c.encoder, c.protocol) for c in s.cells})
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (enc, proto) in zip(axes[0], groups):
        mine = [c for c in s.cells if (c.encoder, c.protocol) == (enc, proto)]
        for layer in sorted({c.head_layer for c in mine}):
            cells = sorted((c for c in mine if c.head_layer == layer), key=lambda c: c.label_fraction)
            ax.errorbar([100 * c.label_fraction for c in cells], [100 * c.top1.mean for c in cells],
                        yerr=[100 * c.top1.half if c.top1.n > 1 else 0.0 for c in cells], marker="o", capsize=3,
                        label=f"head layer {layer}")
        ax.set_xscale("log")
        ax.set_xlabel("labelled training images (%)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{enc}, {proto} fine-tuning (mean, 95% CI)")
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _gain_heatmap(ax, fig, s: DistillSummary) -> None:
    gains = {(p.teacher, p.student): p for p in s.pairs}
    t_names = sorted({p.teacher for p in s.pairs})
    s_names = sorted({p.student for p in s.pairs})
    student_base = {g.name: g.base for g in s.baselines}
    teacher_base = {g.name: g.base for g in s.teachers}
    grid = [[100 * gains[(t, st)].gain.mean if (t, st) in gains and gains[(t, st)].gain.n else math.nan
             for st in s_names] for t in t_names]
    vmax = max([abs(v) for row in grid for v in row if not math.isnan(v)] or [1.0]) or 1.0
    im = ax.imshow(grid, cmap="RdBu", vmin=-vmax, vmax=vmax)
    for i, t in enumerate(t_names):
        for j, st in enumerate(s_names):
            pair = gains.get((t, st))
            if pair is None or pair.gain.n == 0:
                ax.text(j, i, "no runs", ha="center", va="center", fontsize=8)
                continue
            half = f"\n±{100 * pair.gain.half:.1f}" if pair.gain.n > 1 else ""
            mark = " *" if pair.same_base else ""
            ax.text(j, i, f"{100 * pair.gain.mean:+.1f}{half}{mark}\nn={pair.gain.n}", ha="center", va="center",
                    fontsize=8)
    ax.set_xticks(range(len(s_names)), [f"{st}\n({student_base.get(st, '')})" for st in s_names])
    ax.set_yticks(range(len(t_names)), [f"{t} ({teacher_base.get(t, '')})" for t in t_names])
    ax.set_xlabel("student (base)")
    ax.set_ylabel("teacher (base)")
    ax.set_title("gain over own baseline, pp\n(mean ± 95% CI; * = same base)", fontsize=10)
    fig.colorbar(im, ax=ax, label="gain (percentage points)")


def distill(s: DistillSummary, path: Path) -> Path:
    """Heatmap of each pair's gain over its baseline (teachers x students) beside the teachers' own top-1."""
    plt = _plt()
    t_names = sorted({p.teacher for p in s.pairs})
    s_names = sorted({p.student for p in s.pairs})
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(5 + 1.3 * len(s_names), 3.5 + 0.5 * len(t_names)),
                                  gridspec_kw={"width_ratios": [max(len(s_names), 1) + 1, 2]})
    _gain_heatmap(ax, fig, s)
    teacher = {g.name: g.top1 for g in s.teachers}
    names = [t for t in t_names if t in teacher and teacher[t].n]
    ax2.barh(range(len(names)), [100 * teacher[t].mean for t in names],
             xerr=[100 * teacher[t].half if teacher[t].n > 1 else 0 for t in names], capsize=3, color="gray",
             label="teacher top-1 (mean, 95% CI)")
    ax2.set_yticks(range(len(names)), names)
    ax2.invert_yaxis()
    ax2.set_xlabel("teacher top-1 accuracy (%)")
    ax2.set_title("teachers")
    ax2.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def transfer(s: TransferSummary, path: Path) -> Path:
    """Top-1 and chance-normalised top-1 against k (log2 x): bands for within-dataset series, points across."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for group in sorted({(c.encoder, c.protocol, c.kind, c.dataset) for c in s.cells}):
        enc, proto, kind, dataset = group
        cells = sorted((c for c in s.cells if (c.encoder, c.protocol, c.kind, c.dataset) == group), key=lambda c: c.k)
        ks = [c.k for c in cells]
        for ax, ivs in ((axes[0], [c.top1 for c in cells]), (axes[1], [c.norm for c in cells])):
            means = [100 * iv.mean for iv in ivs]
            if kind == "within":
                line = ax.plot(ks, means, marker="o", label=f"{enc} {proto}: {dataset} subsets")[0]
                lo = [100 * (iv.lo if iv.n > 1 else iv.mean) for iv in ivs]
                hi = [100 * (iv.hi if iv.n > 1 else iv.mean) for iv in ivs]
                ax.fill_between(ks, lo, hi, alpha=0.2, color=line.get_color())
            else:
                ax.errorbar(ks, means, yerr=[100 * iv.half if iv.n > 1 else 0 for iv in ivs], marker="s",
                            linestyle="none", capsize=3, label=f"{enc} {proto}: whole {dataset}")
    for ax, ylabel in ((axes[0], "top-1 accuracy (%)"), (axes[1], "chance-normalised top-1 (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of classes k (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("transfer top-1 vs classes (band: 95% CI)")
    axes[1].set_title("chance-normalised (0 = chance)")
    return _save(fig, path)
