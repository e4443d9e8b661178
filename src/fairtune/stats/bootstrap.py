"""Seeded percentile-bootstrap confidence intervals (scipy.stats.bootstrap does the work)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and sample size.

    The interval is ``None`` when it cannot be estimated (fewer than two observations).
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_mean(values: Sequence[float], *, seed: int, n_resamples: int = DEFAULT_RESAMPLES,
                   confidence: float = 0.95) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval; same seed, same interval.

    Percentile rather than BCa: rates near 0 or 1 (all pairs one way) are common in small
    groups, and BCa is undefined on such degenerate samples.
    """
    data = np.asarray(values, dtype=float)
    n = int(data.size)
    if n == 0:
        return Estimate(None, None, None, 0, confidence)
    mean = float(data.mean())
    if n < 2 or np.all(data == data[0]):
        # Every resample of a constant sample is that constant.
        low = high = mean if n >= 2 else None
        return Estimate(mean, low, high, n, confidence)
    result = stats.bootstrap((data,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return Estimate(mean, float(interval.low), float(interval.high), n, confidence)
