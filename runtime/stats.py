"""Statistics of seed comparisons: mean and spread over seeds, bootstrap intervals of a difference.

An *arm* is one condition of a comparison (e.g. "fine-tuned from scratch") and holds one score per
seed. Two arms are compared by the difference of their means; its confidence interval comes from a
stratified bootstrap, as rliable computes it for per-task scores: each resample draws every arm's
seeds with replacement, independently of the other arm (the arms are the strata), and the interval
is the percentile interval of the resampled differences. A gain is claimed only when that interval
excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

DEFAULT_RESAMPLES = 10_000


class Interval(NamedTuple):
    """A point estimate and its confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the whole interval lies on one side of zero (a difference one may claim)."""
        return self.low > 0.0 or self.high < 0.0


def _scores(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty list of per-seed scores, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: scores must be finite, got {array.tolist()}")
    return array


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value) of per-seed scores."""
    array = _scores(values, "mean_std")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def standard_error_of_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of ``mean(a) - mean(b)`` for independent arms: ``sqrt(s_a²/n_a + s_b²/n_b)``."""
    (_, std_a), (_, std_b) = mean_std(a), mean_std(b)
    return math.sqrt(std_a**2 / len(a) + std_b**2 / len(b))


def bootstrap_mean_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``mean(a) - mean(b)`` and its stratified-bootstrap percentile interval.

    Each of ``resamples`` draws resamples ``a`` and ``b`` with replacement, each within itself; the
    interval holds the central ``confidence`` mass of the drawn differences. With few seeds the
    interval is only as wide as the seeds' spread allows (3 identical scores per arm give a zero-width
    interval): it describes these seeds, it does not invent variance they did not show.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    first, second = _scores(a, "arm a"), _scores(b, "arm b")
    rng = np.random.default_rng(seed)
    draws_a = first[rng.integers(0, first.size, size=(resamples, first.size))].mean(axis=1)
    draws_b = second[rng.integers(0, second.size, size=(resamples, second.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws_a - draws_b, [tail, 1.0 - tail])
    # The sample difference itself, not the mean of the draws: the point estimate does not depend on the seed.
    return Interval(float(first.mean() - second.mean()), float(low), float(high))
