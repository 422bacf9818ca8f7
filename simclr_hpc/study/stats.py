"""Statistics of a study's results: pure functions of lists of numbers, checked against scipy in the tests.

* ``t_interval``: mean and 95% t-interval over runs, ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (sd with n-1). With n = 1
  there is no interval (lo/hi are NaN).
* ``paired_test``: two-sided paired t-test (``scipy.stats.ttest_rel``) with the interval of the mean difference.
* ``ols_slope``: ordinary least squares of y on ``log2 k`` (``scipy.stats.linregress``) with a 95% t-interval on n - 2
  degrees of freedom.

scipy.stats is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
