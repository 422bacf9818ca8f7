"""Intervals that respect the range of an accuracy, paired effects, and the verdict each finding gets. Pure; no torch.

Accuracies are fractions in [0, 1] (the report prints percent). The seed is the unit: one seed is one independent
replicate of the whole pipeline (plan.py), and everything measured within a seed (students, class subsets, encoders)
is averaged within that seed before an interval is made, so every ``n`` here counts seeds unless it says otherwise.

* **Accuracy interval**: a t-interval on the logit of the per-seed accuracies, mapped back with the logistic function,
  so it always lies inside (0, 1). Each accuracy ``p`` measured on ``n`` eval images is first moved to
  ``(p n + 1/2) / (n + 1)`` (the empirical logit, Cox 1970), so 0 % and 100 % have finite logits; the correction is
  at most half an image. The point estimate stays the plain mean over seeds, and the interval is widened to hold it
  where that correction would leave it out (every seed at exactly 0 % or 100 %).
* **Effect interval**: the mean of per-seed differences ``a_s - b_s`` over the seeds both sides have, with a paired
  t-interval (``scipy.stats.ttest_rel(a, b).confidence_interval()``), clipped to the possible range [-1, 1].
* **Verdicts** (``judge``): each finding of the study has one primary contrast, a value per seed with the sign the
  paper claims and an equivalence margin (both declared in the study file). Over the family of findings:

  - *reproduced* / *contradicted*: the two-sided t-test of the per-seed values rejects 0 at the family-wise level
    ``alpha`` after Holm's step-down adjustment, on the paper's side / the other side;
  - *absent*: otherwise, when the equivalence test (two one-sided t-tests, TOST) shows the mean within
    ``(-margin, +margin)``, also Holm-adjusted over the family;
  - *inconclusive*: neither shown, or fewer than ``MIN_SEEDS`` seeds (two seeds give a t-interval of +-12.7
    standard errors, and a single sign flip among three can turn a verdict).

  Each verdict also states the minimum effect detectable with 80 % power for its n (two-sided t-test at ``alpha / m``,
  the strictest level Holm can ask of one of ``m`` findings, so it holds whatever the order) and the number of seeds
  the observed effect, with the observed spread, would need for that power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from simclr_hpc.study.stats import TTest, holm, mde, one_sample_t, seeds_needed, t_interval, tost_p

MIN_SEEDS = 3
"""Fewest seeds for which a finding may get a verdict other than inconclusive."""
LEVEL = 0.95
"""Confidence level of every interval."""
ALPHA = 0.05
"""Default family-wise error rate of the verdicts (``alpha`` in the study file)."""
VERDICTS = ("reproduced", "contradicted", "absent", "inconclusive")


@dataclass
class Estimate:
    """A mean with its 95% interval over ``n`` units, saying what the units are and how the interval was made."""

    mean: float
    lo: float
    hi: float
    n: int
    method: str = ""
    """How the interval was made, for the report (e.g. ``"logit t-interval"``)."""
    unit: str = "seeds"
    """What ``n`` counts."""

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly on one side of 0 (never with fewer than 2 values)."""
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)


def accuracy_interval(accuracies: Sequence[float], eval_images: int | Sequence[int], level: float = LEVEL) -> Estimate:
    """Mean accuracy over seeds with a logit t-interval that stays inside (0, 1).

    ``accuracies``: one top-1 fraction per seed; ``eval_images``: the eval-set size (one for all, or one per seed).
    """
    accs = [float(a) for a in accuracies]
    sizes = [int(eval_images)] * len(accs) if isinstance(eval_images, int) else [int(n) for n in eval_images]
    if len(sizes) != len(accs):
        raise ValueError(f"{len(accs)} accuracies but {len(sizes)} eval-set sizes")
    method = "logit t-interval"
    if not accs:
        return Estimate(math.nan, math.nan, math.nan, 0, method)
    mean = sum(accs) / len(accs)
    if len(accs) < 2:
        return Estimate(mean, math.nan, math.nan, 1, method)
    on_logits = t_interval([_logit((a * n + 0.5) / (n + 1)) for a, n in zip(accs, sizes)], level)
    return Estimate(mean, min(mean, _expit(on_logits.lo)), max(mean, _expit(on_logits.hi)), len(accs), method)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Estimate:
    """Mean of ``a[s] - b[s]`` over the seeds in both, with a paired t-interval clipped to [-1, 1]."""
    seeds = sorted(set(a) & set(b))
    return mean_interval([float(a[s]) - float(b[s]) for s in seeds], level, "paired t-interval over seeds", bound=1.0)


def mean_interval(
    values: Sequence[float],
    level: float = LEVEL,
    method: str = "t-interval over seeds",
    unit: str = "seeds",
    bound: float = math.inf,
) -> Estimate:
    """Mean of one value per unit with its t-interval, clipped to ``[-bound, bound]``."""
    iv = t_interval(list(values), level)
    if iv.n < 2:
        return Estimate(iv.mean, math.nan, math.nan, iv.n, method, unit)
    return Estimate(iv.mean, max(-bound, iv.lo), min(bound, iv.hi), iv.n, method, unit)


@dataclass
class Effect:
    """The primary contrast of one finding: one value per seed, the sign the paper claims, the equivalence margin."""

    finding: str
    """The paper's claim, as the report states it."""
    contrast: str
    """What each seed's value is, e.g. ``top-1 at head layer 1 - head layer 0, full fine-tuning at 1% labels``."""
    claim_sign: int
    """+1 when the paper claims the effect is positive, -1 when negative."""
    per_seed: dict[int, float]
    margin: float
    """Equivalence margin, in the effect's unit (a fraction for accuracies)."""
    unit: str = "pp"
    """``pp`` (values are fractions, shown x 100) or the name of another unit (shown as is)."""
    averaged: str = ""
    """What was averaged within each seed first, e.g. ``2 students``."""
    notes: list[str] = field(default_factory=list)
    """Caveats the report prints under the verdict (e.g. cells at the ceiling)."""

    def __post_init__(self) -> None:
        if self.claim_sign not in (1, -1):
            raise ValueError(f"claim_sign must be +1 or -1, got {self.claim_sign!r}")

    @property
    def scale(self) -> float:
        return 100.0 if self.unit == "pp" else 1.0

    def test(self, level: float = LEVEL) -> TTest:
        return one_sample_t([self.per_seed[s] for s in sorted(self.per_seed)], level)


@dataclass
class Verdict:
    """What a study says about one of the paper's claims, and how firmly."""

    effect: Effect
    label: str
    """One of ``VERDICTS``."""
    test: TTest
    """Mean, 95% interval, sd, t and two-sided p of the per-seed values (n = seeds)."""
    p_holm: float
    p_equivalence: float
    """TOST p of ``|mean| < margin``."""
    p_equivalence_holm: float
    mde: float
    """Minimum effect detectable with 80 % power at ``alpha / m`` with this many seeds and this spread."""
    seeds_needed: int | None
    """Seeds the observed effect would need for 80 % power at ``alpha / m`` (None: the effect is 0)."""
    reason: str

    @property
    def finding(self) -> str:
        return self.effect.finding


def judge(effects: Sequence[Effect], alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> list[Verdict]:
    """The verdict of each finding in ``effects`` (one family: Holm over all of them; see the module docstring)."""
    tests = [e.test() for e in effects]
    p_diff = holm([t.p for t in tests])
    p_tost_raw = [tost_p([e.per_seed[s] for s in sorted(e.per_seed)], e.margin) for e in effects]
    p_tost = holm(p_tost_raw)
    family = max(1, sum(not math.isnan(t.p) for t in tests))
    level = alpha / family
    out = []
    for effect, test, pd, pe_raw, pe in zip(effects, tests, p_diff, p_tost_raw, p_tost):
        label, reason = _label(effect, test, pd, pe, alpha, min_seeds)
        out.append(
            Verdict(
                effect,
                label,
                test,
                pd,
                pe_raw,
                pe,
                mde(test.n, test.sd, level),
                seeds_needed(test.mean, test.sd, level),
                reason,
            )
        )
    return out


def _label(effect: Effect, test: TTest, p_diff: float, p_equiv: float, alpha: float, min_seeds: int) -> tuple[str, str]:
    if test.n < min_seeds:
        return "inconclusive", f"{test.n} seed(s): fewer than {min_seeds}, inconclusive by rule"
    if p_diff <= alpha:
        agrees = (test.mean > 0) == (effect.claim_sign > 0)
        small = " (but smaller than the margin)" if p_equiv <= alpha else ""
        side = "the paper's side" if agrees else "the side opposite to the paper's"
        return (
            "reproduced" if agrees else "contradicted",
            f"differs from 0 on {side}, Holm-adjusted p = {p_diff:.2g}{small}",
        )
    if p_equiv <= alpha:
        return "absent", f"shown within the margin, Holm-adjusted equivalence p = {p_equiv:.2g}"
    return "inconclusive", f"neither an effect (Holm p = {p_diff:.2g}) nor its absence (equivalence p = {p_equiv:.2g})"


def _logit(p: float) -> float:
    # Chance-normalised accuracies can fall below 0 (and synthetic ones above 1): clamp into (0, 1) instead of failing.
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def _expit(x: float) -> float:
    # Two branches so neither exp overflows for extreme logits.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
