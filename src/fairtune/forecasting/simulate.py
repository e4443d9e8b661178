"""Series to forecast: simulated AR(1) panels, and the user's own series from a CSV.

``x_t = mu + rho (x_{t-1} - mu) + sigma e_t`` with standard normal ``e_t``, started from the
stationary distribution so that no series begins with a visible drift toward its mean. A *scale*
draws each series' ``mu`` and ``sigma`` (and says how many decimals its numbers show); the
``returns`` scale is the return-like mode: percent changes with a small mean and a negative
``rho`` (short-term reversal). Every series is a pure function of ``(seed, rho, index)``.

A user's series have no known process: :func:`fit_ar1` estimates ``mu``, ``rho`` and ``sigma``
by OLS on the whole series (statsmodels ``AutoReg``), and the rational forecast is that fitted
model's conditional expectation — an in-sample benchmark, which the summary states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fairtune.errors import InputError
from fairtune.readers import read_csv_rows


@dataclass(frozen=True)
class Scale:
    """How a scale's series look: ranges of their mean and innovation s.d., and shown decimals."""

    mu: tuple[float, float]
    sigma: tuple[float, float]
    decimals: int


SCALES: dict[str, Scale] = {
    "tens": Scale(mu=(20.0, 80.0), sigma=(1.0, 4.0), decimals=1),
    "hundreds": Scale(mu=(200.0, 800.0), sigma=(10.0, 40.0), decimals=0),
    "thousands": Scale(mu=(2000.0, 8000.0), sigma=(100.0, 400.0), decimals=0),
    "units": Scale(mu=(2.0, 8.0), sigma=(0.1, 0.4), decimals=2),
    "returns": Scale(mu=(-0.1, 0.3), sigma=(0.5, 2.0), decimals=2),   # percent
}


@dataclass(frozen=True)
class Series:
    """One series. ``mu``/``rho``/``sigma`` are the true process (simulated) or the fitted one."""

    id: str
    values: tuple[float, ...]
    mu: float
    rho: float
    sigma: float
    scale: str
    decimals: int
    source: str          # "simulated" or "fitted"

    def rational(self, t: int, horizon: int) -> float:
        """E[x_{t+h} | x_t] under the series' process (``t`` indexes ``values``)."""
        return self.mu + self.rho ** horizon * (self.values[t] - self.mu)


def _seed(*parts: float | int) -> np.random.Generator:
    # rho is a float: hash its decimal text, not its bits, so 0.2 means the same everywhere.
    key = [int(p) if isinstance(p, int) else int(round(p * 1_000_000)) for p in parts]
    return np.random.default_rng([abs(k) for k in key] + [int(k < 0) for k in key])


def simulate_series(rho: float, *, scale: str, length: int, seed: int, index: int) -> Series:
    """One simulated series of ``length`` values; same arguments, same series."""
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho {rho} must lie strictly between -1 and 1 (a stationary process)")
    spec = SCALES[scale]
    rng = _seed(seed, rho, index, sum(map(ord, scale)))
    mu = float(rng.uniform(*spec.mu))
    sigma = float(rng.uniform(*spec.sigma))
    shocks = rng.standard_normal(length)
    values = np.empty(length)
    values[0] = mu + sigma / math.sqrt(1.0 - rho * rho) * shocks[0]
    for t in range(1, length):
        values[t] = mu + rho * (values[t - 1] - mu) + sigma * shocks[t]
    # The model sees rounded numbers and rational forecasts start from them; every scale shows
    # enough decimals that rounding stays far below sigma.
    shown = tuple(round(float(v), spec.decimals) for v in values)
    return Series(f"rho{rho:g}-{scale}-s{seed}-{index}", shown, mu, rho, sigma, scale, spec.decimals,
                  "simulated")


def simulate_panel(rhos: Sequence[float], *, series_per_rho: int, scale: str, length: int,
                   seed: int) -> list[Series]:
    return [simulate_series(rho, scale=scale, length=length, seed=seed, index=i)
            for rho in rhos for i in range(series_per_rho)]


def fit_ar1(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mu, rho, sigma)`` of an AR(1) fitted by OLS (statsmodels ``AutoReg`` with a constant)."""
    from statsmodels.tsa.ar_model import AutoReg

    fit = AutoReg(np.asarray(values, dtype=float), lags=1, trend="c").fit()
    const, rho = (float(v) for v in fit.params)
    rho = min(max(rho, -0.999), 0.999)   # keep the fitted process stationary
    sigma = float(np.sqrt(fit.sigma2))
    return const / (1.0 - rho), rho, sigma


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def read_series_csv(path: str | Path, *, min_length: int) -> list[Series]:
    """The user's series: a CSV with columns ``series_id, time, value`` (any order, one row per
    observation). Rows are ordered by ``time`` (numbers, or ISO dates compared as text) within
    each series; each series needs ``min_length`` values and gets a fitted AR(1)."""
    path = Path(path)
    rows: dict[str, list[tuple[object, float, int]]] = {}
    places: dict[str, int] = {}
    for row, values in read_csv_rows(path, ["series_id", "time", "value"]):
        series_id = values["series_id"].strip()
        if not series_id:
            raise InputError("empty series id", file=path, row=row, field="series_id")
        raw_time = values["time"].strip()
        if not raw_time:
            raise InputError("empty time", file=path, row=row, field="time")
        try:
            time: object = float(raw_time)
        except ValueError:
            time = raw_time
        raw = values["value"].strip().replace(",", "")
        try:
            value = float(raw)
        except ValueError:
            raise InputError(f"'{values['value'].strip()}' is not a number", file=path, row=row,
                             field="value") from None
        if not math.isfinite(value):
            raise InputError(f"'{raw}' is not a finite number", file=path, row=row, field="value")
        seen = rows.setdefault(series_id, [])
        if seen and type(seen[0][0]) is not type(time):
            raise InputError(f"series '{series_id}' mixes numeric and text times", file=path, row=row,
                             field="time")
        if any(t == time for t, _, _ in seen):
            raise InputError(f"series '{series_id}' has time '{raw_time}' twice", file=path, row=row,
                             field="time")
        seen.append((time, value, row))
        places[series_id] = max(places.get(series_id, 0), _decimals(raw))
    if not rows:
        raise InputError("no rows", file=path)
    series = []
    for series_id, observations in rows.items():
        observations.sort(key=lambda o: o[0])  # type: ignore[arg-type, return-value]
        if len(observations) < min_length:
            raise InputError(f"series '{series_id}' has {len(observations)} values; at least {min_length} "
                             "are needed (history plus forecast origins and horizons)", file=path,
                             row=observations[-1][2], field="series_id")
        values = [v for _, v, _ in observations]
        if np.ptp(values) == 0:
            raise InputError(f"series '{series_id}' is constant", file=path, row=observations[-1][2],
                             field="value")
        mu, rho, sigma = fit_ar1(values)
        series.append(Series(series_id, tuple(values), mu, rho, sigma, "user", places[series_id], "fitted"))
    return series
