"""Statistics of a study's results: pure functions of lists of numbers, checked against scipy and statsmodels in the
tests. The unit of every test here is whatever the caller passes one value per: a study passes one value per seed.

* ``t_interval``: mean and 95% t-interval, ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (sd with n-1); none for n = 1.
* ``one_sample_t``: the two-sided one-sample t-test of mean = 0 with that interval (``scipy.stats.ttest_1samp``).
* ``tost_p``: two one-sided tests of equivalence, H0 ``|mean| >= margin`` (``statsmodels``' ``ttost_paired``).
* ``holm``: Holm's step-down adjusted p-values (``statsmodels``' ``multipletests(method="holm")``).
* ``mde`` / ``seeds_needed``: the two-sided one-sample t-test's minimum detectable effect at a power, and the n an
  effect needs (noncentral t, as ``statsmodels``' ``TTestPower``).
* ``log2_slope``: the least-squares slope of y on ``log2 k`` (one value per seed; the seeds give it an interval).
* ``spearman_interval``: Spearman's rho with a percentile bootstrap interval over the points.

scipy.stats is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

POWER = 0.8
"""Power at which minimum detectable effects and the seeds an effect needs are stated."""


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


def _clean(values) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def t_interval(values: list[float], level: float = 0.95) -> Interval:
    """Mean and two-sided t confidence interval of ``values`` (sample sd, n - 1 degrees of freedom)."""
    from scipy import stats

    vals = _clean(values)
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
class TTest(Interval):
    """A one-sample t-test of mean = 0: the interval, the sample sd, t and the two-sided p (NaN when n < 2)."""

    sd: float = math.nan
    t: float = math.nan
    p: float = math.nan


def one_sample_t(values: Sequence[float], level: float = 0.95) -> TTest:
    """Two-sided one-sample t-test of ``mean(values) = 0`` with its t-interval. With zero spread the test is decided
    by the mean alone (p = 0 when it is not 0, 1 when it is)."""
    from scipy import stats

    vals = _clean(values)
    iv = t_interval(vals, level)
    if iv.n < 2:
        return TTest(iv.mean, iv.lo, iv.hi, iv.n)
    sd = math.sqrt(sum((v - iv.mean) ** 2 for v in vals) / (iv.n - 1))
    if sd == 0:
        return TTest(
            iv.mean,
            iv.mean,
            iv.mean,
            iv.n,
            0.0,
            math.copysign(math.inf, iv.mean) if iv.mean else 0.0,
            0.0 if iv.mean else 1.0,
        )
    t = iv.mean / (sd / math.sqrt(iv.n))
    return TTest(iv.mean, iv.lo, iv.hi, iv.n, sd, t, float(2 * stats.t.sf(abs(t), iv.n - 1)))


def tost_p(values: Sequence[float], margin: float) -> float:
    """p-value of the equivalence test (two one-sided t-tests) of H0 ``mean <= -margin or mean >= margin``: small
    when the mean is shown to lie within ``(-margin, margin)``. NaN with fewer than 2 values."""
    from scipy import stats

    vals = _clean(values)
    n = len(vals)
    if n < 2 or margin <= 0:
        return math.nan
    mean = sum(vals) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1) / n)
    if se == 0:
        return 0.0 if abs(mean) < margin else 1.0
    p_low = stats.t.sf((mean + margin) / se, n - 1)  # H0: mean <= -margin
    p_high = stats.t.cdf((mean - margin) / se, n - 1)  # H0: mean >= +margin
    return float(max(p_low, p_high))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (NaN stays NaN and is not counted in the family)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, running = len(order), 0.0
    out = [math.nan] * len(pvalues)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def t_power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample t-test at level ``alpha`` with ``n`` values when the true mean is ``effect``
    and the sd ``sd`` (noncentral t with n - 1 df; where scipy's noncentral t loses precision, as it does at 1 df, the
    same probability integrated over the chi distribution of the sample sd)."""
    from scipy import stats

    if n < 2:
        return math.nan
    df = n - 1
    crit = stats.t.isf(alpha / 2, df)
    if not sd > 0:
        return 1.0 if effect else alpha
    nc = abs(effect) / sd * math.sqrt(n)
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if math.isfinite(power) and 0.0 <= power <= 1.0:
        return power
    from scipy.integrate import quad

    # T = (Z + nc) / S with S = sqrt(chi2_df / df): P(|T| > c) = E_S[Phi(nc - c S) + Phi(-nc - c S)].
    root = math.sqrt(df)

    def integrand(s: float) -> float:
        return (stats.norm.cdf(nc - crit * s) + stats.norm.cdf(-nc - crit * s)) * stats.chi.pdf(s * root, df) * root

    return float(min(1.0, quad(integrand, 0.0, math.inf, limit=200)[0]))


def mde(n: int, sd: float, alpha: float, power: float = POWER) -> float:
    """The smallest true mean the two-sided one-sample t-test at ``alpha`` detects with ``power`` given ``n`` values
    of sd ``sd``. NaN with fewer than 2 values or an unknown sd."""
    from scipy.optimize import brentq

    if n < 2 or not sd > 0:
        return math.nan if n < 2 or math.isnan(sd) else 0.0
    upper = sd
    while t_power(upper, sd, n, alpha) < power:
        upper *= 2
    return float(brentq(lambda d: t_power(d, sd, n, alpha) - power, 0.0, upper, xtol=1e-10 * sd))


def seeds_needed(effect: float, sd: float, alpha: float, power: float = POWER, most: int = 100_000) -> int | None:
    """The fewest values (seeds) at which the two-sided one-sample t-test at ``alpha`` detects a true mean of
    ``effect`` with ``power``, when values have sd ``sd``; None when the effect is 0 or it needs more than ``most``."""
    if not effect or math.isnan(effect) or math.isnan(sd):
        return None
    if sd == 0:
        return 2
    lo, hi = 2, 2
    while t_power(effect, sd, hi, alpha) < power:
        lo, hi = hi, hi * 2
        if hi > most:
            return None
    while lo < hi:  # the smallest n in [lo, hi] with enough power (power grows with n)
        mid = (lo + hi) // 2
        if t_power(effect, sd, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def log2_slope(ks: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` on ``log2(ks)`` alone (no interval: the caller's unit gets one); NaN with
    fewer than 2 distinct k."""
    pts = [(math.log2(k), float(y)) for k, y in zip(ks, ys) if k and y is not None and not math.isnan(float(y))]
    if len({x for x, _ in pts}) < 2:
        return math.nan
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def spearman_interval(
    xs: Sequence[float], ys: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Spearman's rho of the (x, y) points (``scipy.stats.spearmanr``) with a percentile bootstrap interval over
    resampled points (seeded; resamples where one side is constant have no rho and are dropped). NaN below 3 points.
    The points must be the independent units: a study passes one per encoder (its seeds averaged first)."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} x values but {len(y)} y values")
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Interval(math.nan, math.nan, math.nan, len(x))
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    rx, ry = stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    ok = denom > 0
    rhos = (rx * ry).sum(axis=1)[ok] / denom[ok]  # Pearson of the ranks = Spearman, per resample
    lo, hi = np.quantile(rhos, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(rho, float(lo), float(hi), len(x))


def spearman_p(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Two-sided p of Spearman's rho: exact over every pairing below 9 points (as ``scipy.stats.permutation_test``
    with ``permutation_type="pairings"``), ``scipy.stats.spearmanr``'s t approximation from 9 on. NaN below 3 points
    or with a constant side. (With 4 points even a perfect rho has p = 1/12: too few units to show anything.)"""
    from itertools import permutations

    import numpy as np
    from scipy import stats

    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan
    if len(xs) >= 9:
        return float(stats.spearmanr(xs, ys).pvalue)
    rx, ry = stats.rankdata(xs), stats.rankdata(ys)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = math.sqrt((rx**2).sum() * (ry**2).sum())
    every = np.asarray(list(permutations(ry)))  # at most 8! = 40,320 pairings
    rhos = every @ rx / scale
    observed = float(rx @ ry / scale)
    return float(np.mean(np.abs(rhos) >= abs(observed) - 1e-12))
