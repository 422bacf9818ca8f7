"""Every encoder number beside its baselines (``plan_baselines.py`` plans them): the random-init encoder of its
architecture and the raw-pixel probe, on the same split, protocol and seeds.

A margin is the mean over seeds of (encoder - baseline), each side averaged within its seed first (class subsets),
with a paired t-interval over seeds. A cell is flagged *below* a baseline only when that interval lies wholly below
0; a cell whose interval holds 0 is *not distinguishable* from the baseline, and the report lists it as such.
"""

from __future__ import annotations

from dataclasses import dataclass

from simclr_hpc.study.aggregate import Row
from simclr_hpc.study.cells import Split, accuracy, eval_sizes, finished, group, per_seed
from simclr_hpc.study.verdict import Estimate, paired_difference

BASELINES = ("random", "pixels")


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
        """Shown below the baseline: the margin's interval excludes 0 on the negative side."""
        return self.margin.excludes_zero and self.margin.hi < 0

    @property
    def above(self) -> bool:
        return self.margin.excludes_zero and self.margin.lo > 0

    @property
    def indistinguishable(self) -> bool:
        return not (self.below or self.above)


@dataclass
class EncoderCell:
    """One encoder's top-1 (and kNN) on one split, with its margins over the baselines."""

    encoder: str
    split: Split
    top1: Estimate
    knn: Estimate | None
    eval_images: str
    margins: list[Margin]
    runs: list[Row]

    @property
    def where(self) -> str:
        return self.split.where


def _baseline_runs(done: list[Row], cell: Split, arch: str | None, baseline: str) -> list[Row]:
    want = cell.baseline_split(baseline)
    return [
        r for r in done if r.baseline == baseline and Split.of(r) == want and (baseline == "pixels" or r.arch == arch)
    ]


def summarize_baselines(rows: list[Row], study=None) -> list[EncoderCell]:
    """Every encoder cell of fine-tuning and transfer against the random and pixel baselines of its split."""
    done = [r for r in finished(rows, baselines=True) if r.section in ("finetune", "transfer")]
    encoders = [r for r in done if not r.baseline]
    out = []
    cells = group(encoders, lambda r: (r.encoder, Split.of(r)))
    for (encoder, split), runs in sorted(cells.items(), key=lambda kv: (kv[0][1].section, kv[0][0], kv[0][1])):
        margins = []
        for name in BASELINES:
            base = _baseline_runs(done, split, runs[0].arch, name)
            if base:
                margins.append(Margin(name, accuracy(base), paired_difference(per_seed(runs), per_seed(base))))
        knn = accuracy(runs, "knn_top1_k200")
        out.append(EncoderCell(encoder, split, accuracy(runs), knn if knn.n else None, eval_sizes(runs), margins, runs))
    return out
