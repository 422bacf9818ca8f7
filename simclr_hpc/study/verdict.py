"""Intervals that respect the range of an accuracy, paired effects, and the verdict each finding gets. Pure; no torch.

Accuracies are fractions in [0, 1] (the report prints percent). Seeds are independent replicates of a whole pipeline
(plan.py), so every interval here is over seeds.

* **Accuracy interval**: a t-interval on the logit of the per-seed accuracies, mapped back with the logistic function,
  so it always lies inside (0, 1). Each accuracy ``p`` measured on ``n`` eval images is first moved to
  ``(p n + 1/2) / (n + 1)`` (the empirical logit, Cox 1970), so 0 % and 100 % have finite logits; the correction is
  at most half an image. The point estimate stays the plain mean over seeds, and the interval is widened to hold it
  where that correction would leave it out (every seed at exactly 0 % or 100 %).
* **Effect interval**: the mean of per-seed differences ``a_s - b_s`` over the seeds both sides have (paired by seed:
  one seed's runs share its pretrained encoder and data order), with a paired t-interval, as
  ``scipy.stats.ttest_rel(a, b).confidence_interval()``, clipped to the possible range [-1, 1].
* **Verdict** of a finding whose paper claims an effect of sign +1 or -1: *reproduced* when the effect's interval
  excludes 0 on the paper's side, *contradicted* when it excludes 0 on the other side, *inconclusive* otherwise, and
  *inconclusive* by rule with fewer than ``MIN_SEEDS`` seeds (two seeds give a t-interval of +-12.7 standard errors,
  and a single sign flip among three can turn a verdict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from simclr_hpc.study.stats import Interval, t_interval

MIN_SEEDS = 3
"""Fewest seeds for which a finding may get a verdict other than inconclusive."""
LEVEL = 0.95
"""Confidence level of every interval."""
VERDICTS = ("reproduced", "contradicted", "inconclusive")


@dataclass
class Estimate(Interval):
    """An :class:`Interval` over ``n`` seeds that says how it was made (``lo``/``hi`` are NaN when n < 2)."""

    method: str = ""
    """How the interval was made, for the report (e.g. ``"logit t-interval"``)."""

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly on one side of 0 (never with fewer than 2 values)."""
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)


def accuracy_interval(accuracies: Sequence[float], eval_images: int | Sequence[int], level: float = LEVEL) -> Estimate:
    """Mean accuracy over seeds with a logit t-interval that stays inside (0, 1).

    ``accuracies``: one top-1 fraction per seed; ``eval_images``: the eval-set size (one for all seeds, or one per seed).
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
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    method = "paired t-interval over seeds"
    if not diffs:
        return Estimate(math.nan, math.nan, math.nan, 0, method)
    iv = t_interval(diffs, level)
    if iv.n < 2:
        return Estimate(iv.mean, math.nan, math.nan, iv.n, method)
    return Estimate(iv.mean, max(-1.0, iv.lo), min(1.0, iv.hi), iv.n, method)


@dataclass(frozen=True)
class Verdict:
    """What a study says about one of the paper's claims."""

    finding: str
    label: str
    """``reproduced``, ``contradicted`` or ``inconclusive``."""
    effect: Estimate
    claim_sign: int
    """+1 when the paper claims the effect is positive, -1 when negative."""
    reason: str


def verdict(finding: str, effect: Estimate, claim_sign: int, n_seeds: int | None = None,
            min_seeds: int = MIN_SEEDS) -> Verdict:
    """The verdict on ``finding`` from its effect's interval and the sign the paper claims for it. ``n_seeds``: the
    seeds behind the effect when its ``n`` counts other units (e.g. student x seed pairs); default ``effect.n``."""
    if claim_sign not in (1, -1):
        raise ValueError(f"claim_sign must be +1 or -1, got {claim_sign!r}")
    seeds = effect.n if n_seeds is None else n_seeds
    if seeds < min_seeds:
        return Verdict(finding, "inconclusive", effect, claim_sign,
                       f"{seeds} seed(s): fewer than {min_seeds}, inconclusive by rule")
    if not effect.excludes_zero:
        return Verdict(finding, "inconclusive", effect, claim_sign, "the interval contains 0")
    agrees = (effect.mean > 0) == (claim_sign > 0)
    side = "the paper's" if agrees else "the opposite"
    return Verdict(finding, "reproduced" if agrees else "contradicted", effect, claim_sign,
                   f"the interval excludes 0 on {side} side")


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
