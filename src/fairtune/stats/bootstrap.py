"""Seeded percentile-bootstrap confidence intervals.

``bootstrap_mean`` (scipy.stats.bootstrap does the work) for means; ``bootstrap_statistic`` for
any other statistic of a set of items (ratios of sums, correlations, differences between two sets,
per-target averages), written as a function of item indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 2000

# Set inside point_estimates(): estimates come without intervals, for callers that resample the
# metric itself (paired comparisons) and would otherwise bootstrap inside a bootstrap.
_POINT_ONLY: ContextVar[bool] = ContextVar("fairtune_point_estimates_only", default=False)


@contextmanager
def point_estimates() -> Iterator[None]:
    """Within this block, bootstrap_mean and bootstrap_statistic skip their intervals."""
    token = _POINT_ONLY.set(True)
    try:
        yield
    finally:
        _POINT_ONLY.reset(token)


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


def intervals_wanted() -> bool:
    """False inside :func:`point_estimates`: other interval methods (regression errors) skip too."""
    return not _POINT_ONLY.get()


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
    if _POINT_ONLY.get():
        return Estimate(mean, None, None, n, confidence)
    if n < 2 or np.all(data == data[0]):
        # Every resample of a constant sample is that constant.
        low = high = mean if n >= 2 else None
        return Estimate(mean, low, high, n, confidence)
    result = stats.bootstrap((data,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return Estimate(mean, float(interval.low), float(interval.high), n, confidence)


def bootstrap_statistic(n: int, statistic: Callable[[np.ndarray], float | None], *, seed: int,
                        n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                        strata: Sequence[int] | None = None) -> Estimate:
    """``statistic`` of ``n`` items with a seeded percentile bootstrap interval over the items.

    ``statistic`` takes an integer array of item indices (repeats allowed) and returns a number,
    or ``None`` (or NaN) where it is undefined on those items. The value is
    ``statistic(np.arange(n))``; the interval is the central ``confidence`` percentile range of
    ``statistic`` over ``n_resamples`` resamples of ``n`` indices drawn with replacement from
    ``np.random.default_rng(seed)``, one resample after another (so the draws are those of
    ``rng.integers(0, n, size=(n_resamples, n))``, row by row). Resamples where the statistic is
    undefined are left out of the interval.

    ``strata`` (one label per item) resamples each stratum separately, keeping its size; a
    resample lists the strata in sorted label order. Use it for a statistic comparing fixed sets,
    e.g. the difference of two groups' means.

    Returns no value (and no interval) when ``n`` is 0 or the statistic is undefined on the whole
    sample; no interval when fewer than two items (or, with ``strata``, some stratum has fewer
    than two) or when no resample has a defined statistic.
    """
    if n == 0:
        return Estimate(None, None, None, 0, confidence)
    value = _defined(statistic(np.arange(n)))
    if value is None:
        return Estimate(None, None, None, n, confidence)
    if _POINT_ONLY.get():
        return Estimate(value, None, None, n, confidence)
    if strata is None:
        members = [np.arange(n)]
    else:
        labels = np.asarray(strata)
        if labels.shape != (n,):
            raise ValueError(f"strata has {labels.size} labels for {n} items")
        members = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    if min(m.size for m in members) < 2:
        return Estimate(value, None, None, n, confidence)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_resamples):
        if strata is None:
            index = rng.integers(0, n, size=n)
        else:
            index = np.concatenate([m[rng.integers(0, m.size, size=m.size)] for m in members])
        sample = _defined(statistic(index))
        if sample is not None:
            samples.append(sample)
    if not samples:
        return Estimate(value, None, None, n, confidence)
    tail = (1 - confidence) / 2 * 100   # percent in each tail
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Estimate(value, float(low), float(high), n, confidence)


def _defined(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of two (k, n) arrays, vectorised over rows; NaN where a row is
    (numerically) constant, so a bootstrap can drop those resamples."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / denominator
    r[denominator <= 1e-12] = np.nan
    return np.clip(r, -1.0, 1.0)
