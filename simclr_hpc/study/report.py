"""``report.md``, PNG plots and ``results.csv`` for a study: the paper's three analyses with seeds and intervals.

Statistics (all on top-1 as a fraction, shown in percent):

* Means carry a 95% t-interval over runs: ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (sd with n-1). With n = 1 there is
  no interval and the table says so.
* Distillation gain of a (teacher, student, seed) = top-1 of the distilled student - top-1 of the same student's
  labels-only baseline with the same seed. Same-base vs cross-base: for every (student, seed) that has both kinds of teacher,
  the mean gain from same-base teachers is paired with the mean gain from cross-base teachers; a paired t-test
  (``scipy.stats.ttest_rel``) over those pairs gives the p-value.
* Transfer slope: ordinary least squares of chance-normalised top-1 (``(top1 - 1/k) / (1 - 1/k)``) on ``log2 k`` over
  individual runs, i.e. the change in chance-normalised accuracy per doubling of the class count, with a 95% t-interval
  (n - 2 degrees of freedom). Runs of one seed share an encoder, so the interval assumes more independence than there is.

matplotlib and scipy.stats are imported only here (and only inside functions), with the Agg backend.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from simclr_hpc import fsutil
from simclr_hpc.study.aggregate import collect, not_done, summary, write_csv
from simclr_hpc.study.plan import Plan


@dataclass
class Interval:
    """Mean and 95% t-interval of n values (lo/hi are NaN when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2


def t_interval(values: list[float], level: float = 0.95) -> Interval:
    """Mean and two-sided t confidence interval of ``values`` (sample sd, n - 1 degrees of freedom)."""
    from scipy import stats

    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(vals) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


@dataclass
class PairedTest:
    """Paired comparison of same-base vs cross-base gains: mean difference, its interval, t statistic and p-value."""

    same: list[float]
    cross: list[float]
    pairs: list[str]
    diff: Interval
    t: float
    p: float

    @property
    def n(self) -> int:
        return len(self.same)


def paired_test(same: list[float], cross: list[float], pairs: list[str]) -> PairedTest | None:
    """``scipy.stats.ttest_rel(same, cross)``; None with fewer than 2 pairs (no test is possible)."""
    from scipy import stats

    if len(same) < 2:
        return None
    diffs = [a - b for a, b in zip(same, cross)]
    res = stats.ttest_rel(same, cross)
    return PairedTest(same, cross, pairs, t_interval(diffs), float(res.statistic), float(res.pvalue))


@dataclass
class Slope:
    """OLS slope of y on log2(k) with its 95% interval."""

    slope: float
    lo: float
    hi: float
    intercept: float
    p: float
    n: int


def ols_slope(ks: list[float], ys: list[float], level: float = 0.95) -> Slope | None:
    """Slope of ``ys`` on ``log2(ks)`` (``scipy.stats.linregress``) with a t-interval on n - 2 degrees of freedom."""
    from scipy import stats

    pts = [(math.log2(k), y) for k, y in zip(ks, ys) if k and y is not None]
    if len(pts) < 3 or len({x for x, _ in pts}) < 2:
        return None
    res = stats.linregress([x for x, _ in pts], [y for _, y in pts])
    half = stats.t.ppf(0.5 + level / 2, len(pts) - 2) * res.stderr
    return Slope(res.slope, res.slope - half, res.slope + half, res.intercept, res.pvalue, len(pts))


@dataclass
class Report:
    """What ``write_report`` produced: paths and the three headline findings (one line each)."""

    path: Path
    csv: Path
    plots: list[Path] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def fmt_ci(iv: Interval, signed: bool = False) -> str:
    """``"83.2 [80.1, 86.3]"`` in percent; ``"83.2 (n=1, no CI)"`` when there is a single run."""
    if iv.n == 0:
        return "n/a"
    sign = "+" if signed and iv.mean >= 0 else ""
    if iv.n < 2:
        return f"{sign}{pct(iv.mean)} (n=1, no CI)"
    return f"{sign}{pct(iv.mean)} [{pct(iv.lo)}, {pct(iv.hi)}]"


def link_runs(rows: list[dict], report_dir: Path) -> str:
    """Markdown links from the report to each run's directory, labelled by seed (and class seed)."""
    out = []
    for row in rows:
        label = f"s{row['seed']}" + (f"c{row['class_seed']}" if row.get("class_seed") is not None else "")
        target = os.path.relpath(row["run_dir"], report_dir)
        out.append(f"[{label}]({target})")
    return " ".join(out)


def _done(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if r["status"] == "done" and r.get("top1") is not None
            and all(r.get(k) == v for k, v in match.items())]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finetune_section(rows: list[dict], out: Path, lines: list[str], plots: list[Path]) -> str | None:
    ft = _done(rows, section="finetune")
    planned = [r for r in rows if r["section"] == "finetune"]
    if not planned:
        return None
    lines += ["## 1. Fine-tuning: label fraction and projection-head layer", "",
              "Top-1 (%) on the evaluation split, mean and 95% t-interval over seeds; n = runs per cell.", "",
              "| encoder | protocol | label fraction | head layer | n | top-1 % [95% CI] | runs |",
              "|---|---|---|---|---|---|---|"]
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in ft:
        cells[(r["encoder"], r["protocol"], r["label_fraction"], r["head_layer"])].append(r)
    stats = {}
    for key in sorted(cells):
        iv = t_interval([r["top1"] for r in cells[key]])
        stats[key] = iv
        enc, proto, frac, layer = key
        lines.append(f"| {enc} | {proto} | {100 * frac:g}% | {layer} | {iv.n} | {fmt_ci(iv)} | "
                     f"{link_runs(cells[key], out)} |")
    lines.append("")
    if not stats:
        lines += ["No fine-tuning run has finished yet.", ""]
        return None

    plt = _plt()
    groups = sorted({(k[0], k[1]) for k in stats})
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (enc, proto) in zip(axes[0], groups):
        for layer in sorted({k[3] for k in stats if k[:2] == (enc, proto)}):
            keys = sorted(k for k in stats if k[:2] == (enc, proto) and k[3] == layer)
            xs = [100 * k[2] for k in keys]
            ivs = [stats[k] for k in keys]
            ys = [100 * iv.mean for iv in ivs]
            err = [100 * iv.half if iv.n > 1 else 0.0 for iv in ivs]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"head layer {layer}")
        ax.set_xscale("log")
        ax.set_xlabel("labelled training images (%)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{enc}, {proto} fine-tuning (mean, 95% CI)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "finetune.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    plots.append(path)
    lines += [f"![fine-tuning accuracy by label fraction and head layer]({path.name})", ""]

    best = max(stats, key=lambda k: stats[k].mean)
    text = (f"Fine-tuning: best cell is head layer {best[3]} at {100 * best[2]:g}% labels ({best[0]}, {best[1]}): "
            f"top-1 {fmt_ci(stats[best])}% (n={stats[best].n})")
    fracs = sorted({k[2] for k in stats})
    if len(fracs) > 1:
        lo_f, hi_f = fracs[0], fracs[-1]
        lo = t_interval([r["top1"] for r in ft if r["label_fraction"] == lo_f])
        hi = t_interval([r["top1"] for r in ft if r["label_fraction"] == hi_f])
        text += (f"; {100 * hi_f:g}% vs {100 * lo_f:g}% labels: {100 * (hi.mean - lo.mean):+.1f} pp "
                 f"(means over every layer and seed, n={hi.n} vs {lo.n})")
    layers = sorted({k[3] for k in stats})
    if len(layers) > 1:
        by_layer = {layer: t_interval([r["top1"] for r in ft if r["head_layer"] == layer]).mean for layer in layers}
        best_layer = max(by_layer, key=by_layer.get)
        text += f"; best head layer on average: {best_layer}"
    lines += [f"**Finding.** {text}.", ""]
    return text


def distill_section(rows: list[dict], out: Path, lines: list[str], plots: list[Path]) -> str | None:
    planned = [r for r in rows if r["section"] in ("distill", "baseline", "teacher")]
    if not planned:
        return None
    lines += ["## 2. Distillation: teacher x student, same base vs cross base", "",
              "Gain = distilled student's top-1 - the same student's labels-only baseline (same seed), in percentage "
              "points (pp). Teachers' own accuracies are shown because teacher accuracy and the capacity gap are "
              "confounders of the same-base comparison.", ""]
    baseline = {(r["student"], r["seed"]): r for r in _done(rows, section="baseline")}
    teachers: dict[str, list[dict]] = defaultdict(list)
    for r in _done(rows, section="teacher"):
        teachers[r["teacher"]].append(r)
    gains: dict[tuple[str, str], list[tuple[dict, float]]] = defaultdict(list)
    meta: dict[tuple[str, str], bool] = {}
    for r in [r for r in rows if r["section"] == "distill"]:
        meta[(r["teacher"], r["student"])] = bool(r["same_base"])
        base = baseline.get((r["student"], r["seed"]))
        if r["status"] == "done" and r.get("top1") is not None and base is not None:
            gains[(r["teacher"], r["student"])].append((r, r["top1"] - base["top1"]))

    lines += ["### Teachers", "", "| teacher | base | n | teacher top-1 % [95% CI] | runs |", "|---|---|---|---|---|"]
    teacher_iv = {}
    teacher_base = {r["teacher"]: r["teacher_base"] for r in rows if r["section"] == "teacher"}
    for name in sorted(teacher_base):
        iv = t_interval([r["top1"] for r in teachers.get(name, [])])
        teacher_iv[name] = iv
        lines.append(f"| {name} | {teacher_base[name]} | {iv.n} | {fmt_ci(iv)} | {link_runs(teachers.get(name, []), out)} |")
    lines += ["", "### Students without a teacher (baselines)", "",
              "| student | base | n | baseline top-1 % [95% CI] | runs |", "|---|---|---|---|---|"]
    student_base = {r["student"]: r["student_base"] for r in rows if r["section"] in ("baseline", "distill")}
    for name in sorted(student_base):
        runs = [r for (s, _), r in baseline.items() if s == name]
        iv = t_interval([r["top1"] for r in runs])
        lines.append(f"| {name} | {student_base[name]} | {iv.n} | {fmt_ci(iv)} | {link_runs(runs, out)} |")
    lines += ["", "### Distilled students", "",
              "| teacher | student | pair | n | student top-1 % [95% CI] | gain pp [95% CI] | runs |",
              "|---|---|---|---|---|---|---|"]
    gain_iv = {}
    for key in sorted(meta):
        got = gains.get(key, [])
        acc = t_interval([r["top1"] for r, _ in got])
        gain_iv[key] = t_interval([g for _, g in got])
        kind = "same base" if meta[key] else "cross base"
        lines.append(f"| {key[0]} | {key[1]} | {kind} | {acc.n} | {fmt_ci(acc)} | {fmt_ci(gain_iv[key], True)} | "
                     f"{link_runs([r for r, _ in got], out)} |")
    lines.append("")

    # Pair, per (student, seed), the mean gain from same-base teachers with the mean gain from cross-base teachers.
    per_unit: dict[tuple[str, int], dict[bool, list[float]]] = defaultdict(lambda: {True: [], False: []})
    for (teacher, student), got in gains.items():
        for r, g in got:
            per_unit[(student, r["seed"])][meta[(teacher, student)]].append(g)
    units = sorted(u for u, d in per_unit.items() if d[True] and d[False])
    same = [sum(per_unit[u][True]) / len(per_unit[u][True]) for u in units]
    cross = [sum(per_unit[u][False]) / len(per_unit[u][False]) for u in units]
    test = paired_test(same, cross, [f"{s}/s{seed}" for s, seed in units])
    text = None
    lines += ["### Same base vs cross base (paired over student x seed)", ""]
    if test is None:
        lines += [f"Not testable: {len(units)} (student, seed) unit(s) have both a same-base and a cross-base teacher "
                  "finished; a paired test needs at least 2.", ""]
    else:
        s_iv, c_iv = t_interval(same), t_interval(cross)
        lines += ["| n pairs | same-base gain pp [95% CI] | cross-base gain pp [95% CI] | difference pp [95% CI] | t | p |",
                  "|---|---|---|---|---|---|",
                  f"| {test.n} | {fmt_ci(s_iv, True)} | {fmt_ci(c_iv, True)} | {fmt_ci(test.diff, True)} | "
                  f"{test.t:.2f} | {test.p:.3g} |", "",
                  "Pairs: " + ", ".join(test.pairs) + ". Test: two-sided paired t-test (scipy.stats.ttest_rel).", ""]
        verdict = "larger" if test.diff.mean > 0 else "smaller"
        text = (f"Distillation: same-base gain {fmt_ci(s_iv, True)} pp vs cross-base {fmt_ci(c_iv, True)} pp; "
                f"same-base is {verdict} by {100 * test.diff.mean:+.1f} pp (paired t-test, n={test.n} student-seed "
                f"pairs, p={test.p:.3g})")
        lines += [f"**Finding.** {text}.", ""]

    if gain_iv:
        plt = _plt()
        t_names = sorted({k[0] for k in meta})
        s_names = sorted({k[1] for k in meta})
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(5 + 1.3 * len(s_names), 3.5 + 0.5 * len(t_names)),
                                      gridspec_kw={"width_ratios": [max(len(s_names), 1) + 1, 2]})
        grid = [[100 * gain_iv[(t, s)].mean if (t, s) in gain_iv and gain_iv[(t, s)].n else math.nan
                 for s in s_names] for t in t_names]
        finite = [abs(v) for row in grid for v in row if not math.isnan(v)] or [1.0]
        vmax = max(finite) or 1.0
        im = ax.imshow(grid, cmap="RdBu", vmin=-vmax, vmax=vmax)
        for i, t in enumerate(t_names):
            for j, s in enumerate(s_names):
                iv = gain_iv.get((t, s))
                if iv is None or iv.n == 0:
                    ax.text(j, i, "no runs", ha="center", va="center", fontsize=8)
                    continue
                half = f"\n±{100 * iv.half:.1f}" if iv.n > 1 else ""
                mark = " *" if meta[(t, s)] else ""
                ax.text(j, i, f"{100 * iv.mean:+.1f}{half}{mark}\nn={iv.n}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(s_names)), [f"{s}\n({student_base.get(s, '')})" for s in s_names])
        ax.set_yticks(range(len(t_names)), [f"{t} ({teacher_base.get(t, '')})" for t in t_names])
        ax.set_xlabel("student (base)")
        ax.set_ylabel("teacher (base)")
        ax.set_title("gain over own baseline, pp\n(mean ± 95% CI; * = same base)", fontsize=10)
        fig.colorbar(im, ax=ax, label="gain (percentage points)")
        names = [t for t in t_names if teacher_iv.get(t) and teacher_iv[t].n]
        ys = [100 * teacher_iv[t].mean for t in names]
        err = [100 * teacher_iv[t].half if teacher_iv[t].n > 1 else 0 for t in names]
        ax2.barh(range(len(names)), ys, xerr=err, capsize=3, color="gray", label="teacher top-1 (mean, 95% CI)")
        ax2.set_yticks(range(len(names)), names)
        ax2.invert_yaxis()
        ax2.set_xlabel("teacher top-1 accuracy (%)")
        ax2.set_title("teachers")
        ax2.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        path = out / "distill.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        plots.append(path)
        lines += [f"![distillation gain heatmap and teacher accuracy]({path.name})", ""]
    return text


def transfer_section(rows: list[dict], out: Path, lines: list[str], plots: list[Path]) -> str | None:
    planned = [r for r in rows if r["section"] == "transfer"]
    if not planned:
        return None
    lines += ["## 3. Transfer vs number of classes", "",
              "Top-1 and chance-normalised top-1 ((top1 - 1/k) / (1 - 1/k): 0 = chance, 100 = perfect), in %. "
              "Within-dataset rows use random k-class subsets of one dataset (n = class subsets x seeds per k) at a fixed "
              "number of training images per class, which removes the dataset confound of the paper's comparison; "
              "across-dataset rows compare whole datasets as the paper did.", ""]
    done = _done(rows, section="transfer")
    finding = None
    groups = sorted({(r["encoder"], r["protocol"], r["kind"], r["dataset"]) for r in planned},
                    key=lambda g: (g[0], g[1], g[2] != "within", g[3]))
    lines += ["| encoder | protocol | kind | dataset | k | n | top-1 % [95% CI] | chance-norm. % [95% CI] | runs |",
              "|---|---|---|---|---|---|---|---|---|"]
    series: dict[tuple, list[tuple[int, Interval, Interval]]] = defaultdict(list)
    for enc, proto, kind, dataset in groups:
        runs = [r for r in done if (r["encoder"], r["protocol"], r["kind"], r["dataset"]) == (enc, proto, kind, dataset)]
        for k in sorted({r["k"] for r in runs if r["k"]}):
            cell = [r for r in runs if r["k"] == k]
            top = t_interval([r["top1"] for r in cell])
            norm = t_interval([r["chance_norm_top1"] for r in cell])
            series[(enc, proto, kind, dataset)].append((k, top, norm))
            lines.append(f"| {enc} | {proto} | {kind} | {dataset} | {k} | {top.n} | {fmt_ci(top)} | {fmt_ci(norm)} | "
                         f"{link_runs(cell, out)} |")
    lines.append("")

    lines += ["### Slope of chance-normalised top-1 on log2 k", "",
              "OLS over individual runs; slope in percentage points of chance-normalised top-1 per doubling of the number "
              "of classes, with a 95% t-interval (n - 2 df). Negative = fewer classes transfer better.", "",
              "| encoder | protocol | rows | n runs | slope pp / doubling [95% CI] | p |", "|---|---|---|---|---|---|"]
    slopes = []
    for enc, proto in sorted({(g[0], g[1]) for g in groups}):
        for kind in ("within", "across"):
            for dataset in sorted({g[3] for g in groups if g[:3] == (enc, proto, kind)}) if kind == "within" else [None]:
                sel = [r for r in done if r["encoder"] == enc and r["protocol"] == proto and r["kind"] == kind
                       and (dataset is None or r["dataset"] == dataset) and r.get("chance_norm_top1") is not None]
                if not sel:
                    continue
                fit = ols_slope([r["k"] for r in sel], [r["chance_norm_top1"] for r in sel])
                label = f"within {dataset}" if kind == "within" else "across datasets (confounded with dataset)"
                if fit is None:
                    lines.append(f"| {enc} | {proto} | {label} | {len(sel)} | n/a (needs 3+ runs and 2+ values of k) | |")
                    continue
                slopes.append((enc, proto, label, fit))
                lines.append(f"| {enc} | {proto} | {label} | {fit.n} | {100 * fit.slope:+.1f} "
                             f"[{100 * fit.lo:+.1f}, {100 * fit.hi:+.1f}] | {fit.p:.3g} |")
    lines.append("")
    within = [s for s in slopes if s[2].startswith("within")]
    if within:
        enc, proto, label, fit = within[0]
        finding = (f"Transfer: chance-normalised top-1 changes by {100 * fit.slope:+.1f} pp per doubling of classes "
                   f"(95% CI [{100 * fit.lo:+.1f}, {100 * fit.hi:+.1f}], OLS on log2 k, n={fit.n} runs, {label}, "
                   f"{enc} {proto})")
        lines += [f"**Finding.** {finding}.", ""]

    if series:
        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for (enc, proto, kind, dataset), pts in sorted(series.items()):
            pts = sorted(pts, key=lambda p: p[0])
            ks = [p[0] for p in pts]
            for ax, idx in ((axes[0], 1), (axes[1], 2)):
                means = [100 * p[idx].mean for p in pts]
                if kind == "within":
                    line = ax.plot(ks, means, marker="o", label=f"{enc} {proto}: {dataset} subsets")[0]
                    lo = [100 * (p[idx].lo if p[idx].n > 1 else p[idx].mean) for p in pts]
                    hi = [100 * (p[idx].hi if p[idx].n > 1 else p[idx].mean) for p in pts]
                    ax.fill_between(ks, lo, hi, alpha=0.2, color=line.get_color())
                else:
                    err = [100 * p[idx].half if p[idx].n > 1 else 0 for p in pts]
                    ax.errorbar(ks, means, yerr=err, marker="s", linestyle="none", capsize=3,
                                label=f"{enc} {proto}: whole {dataset}")
        for ax, ylabel in ((axes[0], "top-1 accuracy (%)"), (axes[1], "chance-normalised top-1 (%)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("number of classes k (log scale)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0].set_title("transfer top-1 vs classes (band: 95% CI)")
        axes[1].set_title("chance-normalised (0 = chance)")
        fig.tight_layout()
        path = out / "transfer.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        plots.append(path)
        lines += [f"![transfer accuracy vs number of classes]({path.name})", ""]
    return finding


def write_report(plan: Plan, out_dir: str | Path | None = None) -> Report:
    """Aggregate every planned run and write ``report.md``, ``results.csv`` and the plots into ``<study>/report/``."""
    out = Path(out_dir) if out_dir else plan.study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(plan)
    csv_path = write_csv(rows, out / "results.csv")
    counts = summary(rows)
    study = plan.study
    lines = [f"# Study `{study.name}`", "",
             f"Runs: {len(rows)} planned; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f". "
             f"Seeds: {', '.join(map(str, study.seeds))}. Every run's numbers are in [results.csv](results.csv); each "
             "table cell links its run directories (labelled by seed).", ""]
    plots: list[Path] = []
    findings = []
    for section in (finetune_section, distill_section, transfer_section):
        text = section(rows, out, lines, plots)
        if text:
            findings.append(text)
    missing = not_done(rows)
    lines += ["## Runs without a result", ""]
    if missing:
        lines += [f"{len(missing)} of {len(rows)} planned runs have no result; they are excluded from the statistics "
                  "above and listed here.", "", "| run | status | error | run directory |", "|---|---|---|---|"]
        for r in missing:
            err = (r.get("error") or "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['stage']}/{r['name']} | {r['status']} | {err} | "
                         f"[{r['run_dir']}]({os.path.relpath(r['run_dir'], out)}) |")
    else:
        lines.append("None: every planned run finished.")
    stale = [r for r in rows if r.get("stale")]
    if stale:
        lines += ["", f"{len(stale)} run(s) have a result made with a different config than the study now asks for "
                  "(edited study file?): " + ", ".join(f"{r['stage']}/{r['name']}" for r in stale)]
    lines.append("")
    if findings:
        lines[2:2] = ["## Headline findings", "", *[f"- {f}" for f in findings], ""]
    path = out / "report.md"
    fsutil.write_text_atomic(path, "\n".join(lines))
    return Report(path, csv_path, plots, findings, counts)
