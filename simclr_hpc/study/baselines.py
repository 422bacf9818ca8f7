"""Every encoder number beside its baselines (``builder.py`` plans them): the random-init encoder of its
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


@dataclass
class Overview:
    """The encoder cells of one split but the encoder (e.g. every encoder's linear probe at 10 % labels, head layer
    0) against its baselines: the range of the encoders' means and what the margins show."""

    split: Split
    encoders: list[EncoderCell]
    baselines: dict[str, Estimate]
    """Baseline name -> its top-1 (the same for every encoder of one architecture)."""
    counts: dict[str, tuple[int, int, int]]
    """Baseline name -> (encoders above it, below it, not distinguishable)."""

    @property
    def lowest(self) -> EncoderCell:
        return min(self.encoders, key=lambda c: c.top1.mean)

    @property
    def highest(self) -> EncoderCell:
        return max(self.encoders, key=lambda c: c.top1.mean)


def overview(cells: list[EncoderCell]) -> list[Overview]:
    """One :class:`Overview` per split whose cells have baselines (fine-tuning at head layer 0, and transfer)."""
    out = []
    by_split = group((c for c in cells if c.margins and c.split.head_layer in (0, -1)), lambda c: c.split)
    for split, mine in sorted(by_split.items()):
        names = sorted({m.baseline for c in mine for m in c.margins})
        margins = {name: [m for c in mine for m in c.margins if m.baseline == name] for name in names}
        counts = {
            name: (sum(m.above for m in ms), sum(m.below for m in ms), sum(m.indistinguishable for m in ms))
            for name, ms in margins.items()
        }
        out.append(Overview(split, mine, {name: ms[0].top1 for name, ms in margins.items()}, counts))
    return out
