"""Bounded accuracy intervals, paired effects, Holm, the equivalence test and power against scipy and statsmodels,
and the verdict rules."""

import gc
import itertools
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from simclr_hpc.study.stats import holm, mde, one_sample_t, seeds_needed, t_power, tost_p
from simclr_hpc.study.verdict import Effect, accuracy_interval, judge, paired_difference


def _logit(p):
    return math.log(p / (1 - p))


EXTREMES = [0.0, 1e-4, 0.001, 0.5, 0.999, 1.0]


@pytest.mark.parametrize("n_seeds", range(2, 11))
def test_accuracy_interval_never_leaves_0_100_and_holds_the_mean(n_seeds):
    patterns = [[v] * n_seeds for v in EXTREMES]  # all equal, all 0, all 100
    patterns += [[EXTREMES[(i * j) % len(EXTREMES)] for i in range(n_seeds)] for j in range(1, 6)]  # mixed extremes
    patterns += [[0.0] * (n_seeds - 1) + [1.0], [1.0] * (n_seeds - 1) + [0.0]]
    for accs, eval_images in itertools.product(patterns, (1, 10, 1000, 10**6)):
        iv = accuracy_interval(accs, eval_images)
        assert 0.0 <= iv.lo <= iv.mean <= iv.hi <= 1.0, (accs, eval_images, iv)
        assert iv.n == n_seeds


def test_accuracy_interval_is_scipys_t_interval_on_the_corrected_logits():
    accs, n = [0.71, 0.74, 0.69, 0.80], 500
    logits = [_logit((a * n + 0.5) / (n + 1)) for a in accs]
    lo, hi = stats.t.interval(0.95, len(accs) - 1, loc=sum(logits) / 4, scale=stats.sem(logits))
    iv = accuracy_interval(accs, n)
    assert _logit(iv.lo) == pytest.approx(lo) and _logit(iv.hi) == pytest.approx(hi)
    assert iv.mean == pytest.approx(sum(accs) / 4)


def test_accuracy_interval_takes_one_eval_size_per_seed_and_has_no_interval_for_one_seed():
    assert accuracy_interval([0.5, 0.6], [100, 200]).n == 2
    one = accuracy_interval([0.9], 100)
    assert one.mean == 0.9 and math.isnan(one.lo) and math.isnan(one.hi)
    with pytest.raises(ValueError, match="2 accuracies but 3"):
        accuracy_interval([0.5, 0.6], [1, 2, 3])


def test_paired_difference_equals_scipy_ttest_rel_confidence_interval():
    a = {0: 0.82, 1: 0.85, 2: 0.80, 3: 0.88, 7: 0.5}
    b = {0: 0.75, 1: 0.79, 2: 0.77, 3: 0.80, 9: 0.1}  # seeds 7 and 9 have no partner: left out
    ref = stats.ttest_rel([0.82, 0.85, 0.80, 0.88], [0.75, 0.79, 0.77, 0.80]).confidence_interval(0.95)
    iv = paired_difference(a, b)
    assert iv.n == 4 and iv.mean == pytest.approx(0.06)
    assert (iv.lo, iv.hi) == pytest.approx((ref.low, ref.high))


def test_paired_difference_is_clipped_to_the_possible_range():
    iv = paired_difference({0: 1.0, 1: 0.0}, {0: 0.0, 1: 0.0})
    assert -1.0 <= iv.lo < iv.mean < iv.hi <= 1.0


@pytest.fixture
def frozen_heap():
    """statsmodels' ``multipletests(method="holm")`` calls ``gc.collect()`` on every call, which walks every object
    the test session holds (about 0.8 s a call late in ``make test``): the heap so far is frozen out of the collector's
    reach while the reference runs. The reference's numbers do not change."""
    gc.freeze()
    yield
    gc.unfreeze()


def test_holm_equals_statsmodels_multipletests(frozen_heap):
    rng = np.random.default_rng(0)
    for m in (1, 2, 3, 5, 8):
        for _ in range(20):
            p = list(rng.uniform(0, 0.2, m) ** rng.uniform(0.5, 3))
            assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([0.01, math.nan, 0.04])[::2] == pytest.approx(list(multipletests([0.01, 0.04], method="holm")[1]))
    assert math.isnan(holm([0.01, math.nan])[1])


def test_equivalence_p_equals_statsmodels_ttost():
    rng = np.random.default_rng(1)
    for n in (3, 5, 12):
        for _ in range(10):
            x = rng.normal(rng.uniform(-1, 1), rng.uniform(0.2, 2), n)
            margin = rng.uniform(0.2, 2)
            assert tost_p(x, margin) == pytest.approx(ttost_paired(x, np.zeros(n), -margin, margin)[0])


def test_one_sample_t_equals_scipy_ttest_1samp():
    x = [0.012, -0.004, 0.02, 0.009, 0.015]
    test, ref = one_sample_t(x), stats.ttest_1samp(x, 0.0)
    ci = ref.confidence_interval(0.95)
    assert (test.t, test.p, test.lo, test.hi) == pytest.approx((ref.statistic, ref.pvalue, ci.low, ci.high))
    assert test.sd == pytest.approx(np.std(x, ddof=1)) and test.n == 5


def test_mde_power_and_seeds_needed_equal_statsmodels_ttestpower():
    power = TTestPower()
    for n, alpha in ((3, 0.05), (5, 0.05 / 3), (8, 0.05), (20, 0.01)):
        d = power.solve_power(effect_size=None, nobs=n, alpha=alpha, power=0.8)
        assert mde(n, 2.0, alpha) == pytest.approx(2.0 * d, rel=1e-4)  # statsmodels solves to about 1e-6
        assert power.power(mde(n, 2.0, alpha) / 2.0, n, alpha) == pytest.approx(0.8, abs=1e-9)
        assert t_power(0.7, 1.3, n, alpha) == pytest.approx(power.power(0.7 / 1.3, n, alpha), rel=1e-6)
    need = seeds_needed(0.5, 1.0, 0.05)
    assert power.power(0.5, need, 0.05) >= 0.8 > power.power(0.5, need - 1, 0.05)
    assert seeds_needed(0.0, 1.0, 0.05) is None and mde(1, 1.0, 0.05) != mde(1, 1.0, 0.05)  # NaN


def _effect(values, sign=+1, margin=0.01) -> Effect:
    return Effect("claim", "contrast", sign, dict(enumerate(values)), margin)


def test_verdict_with_two_seeds_is_inconclusive_however_large_the_effect():
    (v,) = judge([_effect([0.30, 0.31])])
    assert v.label == "inconclusive" and "fewer than 3" in v.reason


def test_verdicts_follow_the_holm_adjusted_test_and_the_papers_sign():
    better = [0.05, 0.052, 0.049, 0.055]
    (v,) = judge([_effect(better)])
    assert v.label == "reproduced" and v.p_holm == pytest.approx(stats.ttest_1samp(better, 0).pvalue)
    assert judge([_effect(better, -1)])[0].label == "contradicted"
    noisy = judge([_effect([0.05, -0.08, 0.1])])[0]
    assert noisy.label == "inconclusive" and "neither" in noisy.reason
    with pytest.raises(ValueError):
        _effect(better, 0)


def test_holm_over_the_family_can_turn_a_marginal_finding_inconclusive(frozen_heap):
    marginal = [0.010, 0.013, 0.004, 0.016, 0.002]  # p about 0.03 alone
    strong = [0.05, 0.051, 0.049, 0.052, 0.05]
    alone = judge([_effect(marginal)])[0]
    assert alone.label == "reproduced" and alone.p_holm < 0.05
    together = judge([_effect(marginal), _effect(strong), _effect([0.2, -0.1, 0.05, 0.3, -0.2])])
    assert together[0].p_holm == pytest.approx(multipletests([v.test.p for v in together], method="holm")[1][0])
    assert together[0].label == "inconclusive" and together[1].label == "reproduced"


def test_a_small_effect_with_a_tight_interval_is_absent_and_says_its_mde():
    (v,) = judge([_effect([0.001, -0.002, 0.0005, 0.0015, -0.001, 0.0], margin=0.01)])
    assert v.label == "absent" and v.p_equivalence_holm < 0.05
    assert 0 < v.mde < 0.01 and v.seeds_needed is None or v.seeds_needed > 6


def test_spearman_interval_point_is_scipys_rho_and_the_bootstrap_interval_holds_it():
    from simclr_hpc.study.stats import spearman_interval

    xs = [0.1, 0.4, 0.35, 0.8, 0.6, 0.9, 0.2, 0.5]
    ys = [0.50, 0.62, 0.55, 0.81, 0.70, 0.79, 0.58, 0.61]
    est = spearman_interval(xs, ys)
    assert est.mean == pytest.approx(stats.spearmanr(xs, ys).statistic)
    assert -1.0 <= est.lo <= est.mean <= est.hi <= 1.0 and est.n == 8
    assert spearman_interval(xs, ys) == est  # seeded: the same interval every time
    perfect = spearman_interval([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert (perfect.mean, perfect.lo, perfect.hi) == pytest.approx((1.0, 1.0, 1.0))
    assert math.isnan(spearman_interval([1, 2], [3, 4]).lo) and math.isnan(spearman_interval([1, 1, 1], [1, 2, 3]).mean)
