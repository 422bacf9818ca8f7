"""The report's PNG plots, one per summary: the only module that knows matplotlib (Agg backend, imported on first use).

Each function draws one summary of ``summaries.py`` into ``path`` and returns ``path``; none computes a statistic.
"""

from __future__ import annotations

import math
from pathlib import Path

from simclr_hpc import fsutil
from simclr_hpc.study.summaries import DistillFraction, DistillSummary, FinetuneSummary, TransferSummary


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        with fsutil.atomic_path(path) as tmp:  # a full disk leaves no half a PNG
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        _plt().close(fig)
    return path


def finetune(s: FinetuneSummary, path: Path) -> Path:
    """Top-1 by label fraction (log x), one line per head layer, one panel per (encoder, protocol)."""
    plt = _plt()
    groups = sorted({(c.encoder, c.split.protocol) for c in s.cells})
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (enc, proto) in zip(axes[0], groups):
        mine = [c for c in s.cells if (c.encoder, c.split.protocol) == (enc, proto)]
        for layer in sorted({c.split.head_layer for c in mine}):
            cells = sorted((c for c in mine if c.split.head_layer == layer), key=lambda c: c.split.label_fraction)
            ax.errorbar(
                [100 * c.split.label_fraction for c in cells],
                [100 * c.top1.mean for c in cells],
                yerr=[100 * c.top1.half if c.top1.n > 1 else 0.0 for c in cells],
                marker="o",
                capsize=3,
                label=f"head layer {layer}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("labelled training images (%)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{enc}, {proto} fine-tuning (mean, 95% CI)")
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _gain_heatmap(ax, fig, f: DistillFraction) -> None:
    gains = {(p.teacher, p.student): p for p in f.pairs}
    t_names = sorted({p.teacher for p in f.pairs})
    s_names = sorted({p.student for p in f.pairs})
    student_base = {g.name: g.base for g in f.baselines}
    teacher_base = {g.name: g.base for g in f.teachers}
    grid = [
        [100 * gains[(t, st)].gain.mean if (t, st) in gains and gains[(t, st)].gain.n else math.nan for st in s_names]
        for t in t_names
    ]
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
            ax.text(
                j, i, f"{100 * pair.gain.mean:+.1f}{half}{mark}\nn={pair.gain.n}", ha="center", va="center", fontsize=8
            )
    ax.set_xticks(range(len(s_names)), [f"{st}\n({student_base.get(st, '')})" for st in s_names])
    ax.set_yticks(range(len(t_names)), [f"{t} ({teacher_base.get(t, '')})" for t in t_names])
    ax.set_xlabel("student (base)")
    ax.set_ylabel("teacher (base)")
    ax.set_title(
        f"gain over labels-only, pp, {100 * f.label_fraction:g}% labels\n(mean ± 95% CI over seeds; * = same base)",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, label="gain (percentage points)")


def distill(s: DistillSummary, path: Path) -> Path:
    """Per label fraction: a heatmap of each pair's gain over its baseline beside the teachers' and baselines' top-1."""
    plt = _plt()
    parts = [f for f in s.fractions if f.pairs]
    width = max(len({p.student for p in f.pairs}) for f in parts)
    height = max(len({p.teacher for p in f.pairs}) for f in parts)
    fig, axes = plt.subplots(
        len(parts),
        2,
        figsize=(5 + 1.3 * width, (3.5 + 0.5 * height) * len(parts)),
        gridspec_kw={"width_ratios": [width + 1, 2]},
        squeeze=False,
    )
    for (ax, ax2), f in zip(axes, parts):
        _gain_heatmap(ax, fig, f)
        bars = [(f"teacher {g.name}", g.top1) for g in f.teachers] + [
            (f"labels-only {g.name}", g.top1) for g in f.baselines
        ]
        bars = [(name, iv) for name, iv in bars if iv.n]
        ax2.barh(
            range(len(bars)),
            [100 * iv.mean for _, iv in bars],
            xerr=[100 * iv.half if iv.n > 1 else 0 for _, iv in bars],
            capsize=3,
            color=["gray" if name.startswith("teacher") else "silver" for name, _ in bars],
        )
        ax2.set_yticks(range(len(bars)), [name for name, _ in bars])
        ax2.invert_yaxis()
        ax2.set_xlabel("top-1 accuracy (%, mean, 95% CI)")
        ax2.set_title("teachers and labels-only students")
    return _save(fig, path)


def transfer(s: TransferSummary, path: Path) -> Path:
    """Top-1, chance-normalised top-1 and d' against k (log2 x): bands for within-dataset series, points across."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for group in sorted({(c.encoder, c.split.protocol, c.split.kind, c.split.dataset) for c in s.cells}):
        enc, proto, kind, dataset = group
        cells = sorted(
            (c for c in s.cells if (c.encoder, c.split.protocol, c.split.kind, c.split.dataset) == group),
            key=lambda c: c.split.k,
        )
        ks = [c.split.k for c in cells]
        for ax, ivs, scale in (
            (axes[0], [c.top1 for c in cells], 100),
            (axes[1], [c.norm for c in cells], 100),
            (axes[2], [c.dprime for c in cells], 1),
        ):
            means = [scale * iv.mean for iv in ivs]
            if kind == "within":
                line = ax.plot(ks, means, marker="o", label=f"{enc} {proto}: {dataset} subsets")[0]
                lo = [scale * (iv.lo if iv.n > 1 else iv.mean) for iv in ivs]
                hi = [scale * (iv.hi if iv.n > 1 else iv.mean) for iv in ivs]
                ax.fill_between(ks, lo, hi, alpha=0.2, color=line.get_color())
            else:
                ax.errorbar(
                    ks,
                    means,
                    yerr=[scale * iv.half if iv.n > 1 else 0 for iv in ivs],
                    marker="s",
                    linestyle="none",
                    capsize=3,
                    label=f"{enc} {proto}: whole {dataset}",
                )
    labels = ("top-1 accuracy (%)", "chance-normalised top-1 (%)", "d' (equal-variance model)")
    for ax, ylabel in zip(axes, labels):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of classes k (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("transfer top-1 vs classes (band: 95% CI)")
    axes[1].set_title("chance-normalised (falls with k by itself)")
    axes[2].set_title("d': flat when every class pair is equally separable")
    return _save(fig, path)


def properties(corrs, path: Path) -> Path:
    """Fine-tuned top-1 against each pretraining property, one point per encoder (one colour per protocol and label
    fraction), titled with Spearman's rho. ``corrs``: ``properties.PropertyCorrelation`` list."""
    plt = _plt()
    props = sorted({c.prop for c in corrs})
    fig, axes = plt.subplots(1, len(props), figsize=(4.5 * len(props), 3.8), squeeze=False)
    for ax, prop in zip(axes[0], props):
        for c in (c for c in corrs if c.prop == prop):
            ax.scatter(
                [p[0] for p in c.points],
                [100 * p[1] for p in c.points],
                label=f"{c.protocol} {100 * c.label_fraction:g}%: rho {c.rho.mean:+.2f}",
            )
            for x, y, name in c.points:
                ax.annotate(name, (x, 100 * y), fontsize=6, alpha=0.7)
        ax.set_xlabel(prop + (" (fraction)" if prop.startswith("knn") else ""))
        ax.set_ylabel("fine-tuned top-1 (%), mean over seeds")
        ax.set_title(f"{prop} vs fine-tuned top-1 (one point per encoder)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)
