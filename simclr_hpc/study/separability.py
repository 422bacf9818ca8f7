"""d': how separable a classifier's classes are, recovered from its k-way accuracy so that it does not depend on k.

Accuracy falls with the number of classes k even when nothing about the classes changes: each extra class is one more
competitor that can out-score the true one. Chance-normalised accuracy ``(acc - 1/k) / (1 - 1/k)`` corrects the floor,
not the competition, so it falls too. The equal-variance Gaussian model of a k-way choice (Thurstone; signal detection
theory's m-alternative forced choice, Green & Swets 1966; Macmillan & Creelman ch. 13) says what k alone costs: every
class pair is equally separable, the true class's score is ``N(d', 1)``, each of the ``k - 1`` others is ``N(0, 1)``,
and the classifier picks the highest, so

    P_correct(d', k) = E_z[ Phi(z + d')^(k-1) ],  z ~ N(0, 1)

(k = 2: ``Phi(d' / sqrt 2)``). Inverting it turns an accuracy measured at k into a d' that stays the same at every k
when every pair of classes is equally separable: the null of the transfer finding. A d' that falls with k means the
classifier separates classes less well as their number grows, beyond what the extra competitors cost.

Numerics: the expectation is a trapezoid sum over z in [-9, 9] (2,001 points; exact to ~1e-9 for k <= 1,000), the
inverse a monotone interpolation on a d' grid of step 0.005 in [-4, 12], cached per k, so a whole simulated study of
accuracies inverts in one vectorised call. An accuracy of 100 % (or 0 %) has no finite d': like the logit interval,
each accuracy is first moved by half an image, ``(p n + 1/2) / (n + 1)`` with ``n`` the eval-set size, which bounds
d' by what the eval set can show (at k = 2 with 200 images, d' <= 3.9). That bound pulls a ceiling cell's d' down,
which at small k works against finding a fall with k (conservative); the report counts the cells at the ceiling.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import ndtr

_Z = np.linspace(-9.0, 9.0, 2001)
_WEIGHT = np.exp(-0.5 * _Z**2) / np.sqrt(2 * np.pi) * (_Z[1] - _Z[0])
_GRID = np.arange(-4.0, 12.0 + 1e-9, 0.005)


def correct_probability(dprime, k: int) -> np.ndarray:
    """P(correct) of the equal-variance k-way choice at separation ``dprime`` (array-like) between every class pair."""
    d = np.atleast_1d(np.asarray(dprime, dtype=float))
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    return (ndtr(_Z[None, :] + d[:, None]) ** (k - 1)) @ _WEIGHT


@lru_cache(maxsize=256)
def _table(k: int) -> np.ndarray:
    p = correct_probability(_GRID, k)
    return np.maximum.accumulate(p)  # monotone in d' (guards the interpolation against rounding)


def dprime(accuracy, k, eval_images) -> np.ndarray:
    """d' of each k-way ``accuracy`` (fractions) measured on ``eval_images`` images (arrays broadcast together; k may
    vary). Each accuracy is moved by half an image first (see the module docstring), so 0 % and 100 % give finite d'."""
    acc, ks, n = np.broadcast_arrays(
        np.atleast_1d(np.asarray(accuracy, float)), np.asarray(k, int), np.asarray(eval_images, float)
    )
    p = (acc * n + 0.5) / (n + 1)
    out = np.empty(acc.shape)
    for kk in np.unique(ks):
        sel = ks == kk
        table = _table(int(kk))
        out[sel] = np.interp(p[sel], table, _GRID)
    return out


def at_ceiling(accuracy, eval_images) -> np.ndarray:
    """Whether an accuracy is every image right (its d' is only a lower bound)."""
    acc, n = np.broadcast_arrays(np.asarray(accuracy, float), np.asarray(eval_images, float))
    return np.round(acc * n) >= n
