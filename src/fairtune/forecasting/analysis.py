"""Extrapolation-bias measures from forecast records, with cluster-robust standard errors.

Every variable is divided by its series' innovation s.d. ``sigma`` so that series of different
scales pool. For forecasts of ``x_{t+h}`` (``h`` the first horizon asked, 1 by default):

- ``cg_coefficient`` — Coibion and Gorodnichenko (2015): forecast error ``x_{t+h} - F_t x_{t+h}``
  regressed on the forecast revision ``F_t x_{t+h} - F_{t-1} x_{t+h}`` (the second horizon asked
  at the previous origin). Negative: overreaction; 0: rational; positive: underreaction.
- ``cg_coefficient_expected`` — the same regression with the error measured from the conditional
  expectation under the series' process, ``E[x_{t+h} | x_t] - F_t x_{t+h}``, instead of the
  realised value. The difference, the innovations after ``t``, is independent of everything known
  at ``t`` (the revision included), so both estimate the same coefficient; this one without the
  innovations' noise. For the posterior-mean forecaster on panels of 8 series a level its s.d.
  across panel seeds is about 0.045 against 0.10 (``benchmarks/cg_sampling_noise.py``). Only as
  good as the process: for a user's series that is the AR(1) fitted to the whole series.
- ``extrapolation_loading`` — the forecast's deviation from the rational forecast regressed on the
  latest change ``x_t - x_{t-1}``. Positive: the recent move is extrapolated.
- ``implied_persistence`` (per rho) — the forecast's distance from the mean ``F_t x_{t+h} - mu``
  regressed on ``x_t - mu``: the persistence the forecaster acts as if the series had (``rho**h``
  is rational; ``details`` lists it). Overall, ``persistence_gap`` regresses the deviation from the
  rational forecast on ``x_t - mu``: implied minus true, pooled.
- ``mse_vs_rational`` — mean over parsed replies and both horizons of the squared deviation from
  the rational forecast (bootstrap interval).
- ``parse_failure_rate`` — share of replies without usable forecasts (bootstrap interval).

Regressions are OLS (statsmodels) with standard errors clustered by series, because the origins
of one series share shocks; with fewer than two series the errors fall back to HC1. With eight
series a level the clustered intervals are wide, and say so by being wide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fairtune.audits.base import MetricTable
from fairtune.stats import Estimate, bootstrap_mean, intervals_wanted

Record = dict[str, Any]
OVERALL = "overall"


def ols_slope(y: Sequence[float], x: Sequence[float], clusters: Sequence[str]) -> Estimate:
    """Slope of ``y = a + b x`` with a 95% interval from cluster-robust (or HC1) errors."""
    import statsmodels.api as sm

    y_arr, x_arr = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    n = int(y_arr.size)
    if n < 3 or np.ptp(x_arr) < 1e-12:
        return Estimate(None, None, None, n)
    if not intervals_wanted():   # resampled by a caller: the slope alone, by least squares
        slope = float(np.polyfit(x_arr, y_arr, 1)[0])
        return Estimate(slope, None, None, n)
    design = sm.add_constant(x_arr, has_constant="add")
    groups = np.unique(np.asarray(clusters), return_inverse=True)[1]
    if len(set(groups.tolist())) >= 2:
        fit = sm.OLS(y_arr, design).fit(cov_type="cluster", cov_kwds={"groups": groups})
    else:
        fit = sm.OLS(y_arr, design).fit(cov_type="HC1")
    low, high = fit.conf_int(0.05)[1]
    value = float(fit.params[1])
    if not (np.isfinite(low) and np.isfinite(high)):
        return Estimate(value, None, None, n)
    return Estimate(value, float(low), float(high), n)


def _z(value: float, record: Record) -> float:
    return value / record["inputs"]["sigma"]


def revision_pairs(records: Sequence[Record]) -> list[tuple[Record, float]]:
    """``(record, revision)`` for each parsed record whose series' previous origin parsed too."""
    by_series: dict[str, dict[int, Record]] = defaultdict(dict)
    for record in records:
        by_series[record["inputs"]["series"]][record["inputs"]["origin"]] = record
    pairs = []
    for origins in by_series.values():
        for origin, record in sorted(origins.items()):
            previous = origins.get(origin - 1)
            now = record["scores"]["forecasts"]
            if previous is None or now is None or previous["scores"]["forecasts"] is None:
                continue
            pairs.append((record, _z(now[0] - previous["scores"]["forecasts"][1], record)))
    return pairs


def _parsed(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r["scores"]["forecasts"] is not None]


def _cg(records: Sequence[Record], outcome: Callable[[Record], float]) -> Estimate:
    """The forecast error ``outcome - F_t x_{t+h}`` regressed on the revision, over revision pairs."""
    pairs = revision_pairs(records)
    errors = [_z(outcome(r) - r["scores"]["forecasts"][0], r) for r, _ in pairs]
    return ols_slope(errors, [v for _, v in pairs], [r["inputs"]["series"] for r, _ in pairs])


def cg_coefficient(records: Sequence[Record]) -> Estimate:
    return _cg(records, lambda r: r["inputs"]["realised"][0])


def cg_coefficient_expected(records: Sequence[Record]) -> Estimate:
    return _cg(records, lambda r: r["inputs"]["rational"][0])


def _regress(records: Sequence[Record], y: Callable[[Record], float], x: Callable[[Record], float]) -> Estimate:
    parsed = _parsed(records)
    return ols_slope([y(r) for r in parsed], [x(r) for r in parsed], [r["inputs"]["series"] for r in parsed])


def _deviation(r: Record) -> float:
    return _z(r["scores"]["forecasts"][0] - r["inputs"]["rational"][0], r)


def extrapolation_loading(records: Sequence[Record]) -> Estimate:
    return _regress(records, _deviation, lambda r: _z(r["inputs"]["last"] - r["inputs"]["previous"], r))


def implied_persistence(records: Sequence[Record]) -> Estimate:
    return _regress(records, lambda r: _z(r["scores"]["forecasts"][0] - r["inputs"]["mu"], r),
                    lambda r: _z(r["inputs"]["last"] - r["inputs"]["mu"], r))


def persistence_gap(records: Sequence[Record]) -> Estimate:
    return _regress(records, _deviation, lambda r: _z(r["inputs"]["last"] - r["inputs"]["mu"], r))


def squared_deviation(record: Record) -> float | None:
    """Mean over horizons of the squared, sigma-scaled deviation from the rational forecast."""
    forecasts = record["scores"]["forecasts"]
    if forecasts is None:
        return None
    return float(np.mean([_z(f - e, record) ** 2 for f, e in zip(forecasts, record["inputs"]["rational"])]))


def _group_metrics(records: Sequence[Record], *, seed: int, overall: bool) -> dict[str, Estimate]:
    deviations = [d for r in records if (d := squared_deviation(r)) is not None]
    metrics = {
        "cg_coefficient": cg_coefficient(records),
        "cg_coefficient_expected": cg_coefficient_expected(records),
        "extrapolation_loading": extrapolation_loading(records),
        "persistence_gap" if overall else "implied_persistence":
            (persistence_gap if overall else implied_persistence)(records),
        "mse_vs_rational": bootstrap_mean(deviations, seed=seed),
        "parse_failure_rate": bootstrap_mean([float(r["scores"]["forecasts"] is None) for r in records],
                                             seed=seed),
    }
    return metrics


def extrapolation_metrics(records: Sequence[Record], *, seed: int) -> MetricTable:
    """Pooled (``overall``) and per-group measures (groups are rho levels, or ``user``)."""
    table = MetricTable()
    for name, estimate in _group_metrics(records, seed=seed, overall=True).items():
        table.add(OVERALL, name, estimate)
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record["group"]].append(record)
    for group in sorted(groups, key=_group_order):
        for name, estimate in _group_metrics(groups[group], seed=seed, overall=False).items():
            table.add(group, name, estimate)
    return table


def _group_order(group: str) -> tuple[float, str]:
    try:
        return float(group.split("=", 1)[1]), group
    except (IndexError, ValueError):
        return float("inf"), group
