"""Bounded accuracy intervals, paired effects against scipy, and the verdict rules."""

import itertools
import math

import pytest
from scipy import stats

from simclr_hpc.study.verdict import Estimate, accuracy_interval, paired_difference, verdict


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


def test_verdict_with_two_seeds_is_inconclusive_however_large_the_effect():
    effect = Estimate(0.30, 0.29, 0.31, 2, "paired t-interval over seeds")
    v = verdict("distillation helps", effect, +1)
    assert v.label == "inconclusive" and "fewer than 3" in v.reason


def test_verdict_follows_the_interval_and_the_papers_sign():
    seeds = {s: 0.80 + 0.01 * s for s in range(4)}
    better = paired_difference(seeds, {s: v - 0.05 + 0.002 * s for s, v in seeds.items()})
    assert better.excludes_zero and better.mean > 0
    assert verdict("x", better, +1).label == "reproduced"
    assert verdict("x", better, -1).label == "contradicted"
    noisy = paired_difference({0: 0.8, 1: 0.7, 2: 0.9}, {0: 0.75, 1: 0.78, 2: 0.8})
    assert not noisy.excludes_zero and verdict("x", noisy, +1).label == "inconclusive"
    with pytest.raises(ValueError):
        verdict("x", better, 0)


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
