"""The rational forecast given only what the forecaster is shown: the AR(1) posterior mean.

A forecaster that sees sixteen values does not know the process's mean, persistence or noise,
so its rational expectation is the posterior predictive mean, not the forecast under the true
parameters (which also carries the truth the history does not reveal). As a training target it
is a function of the prompt alone, so a model can learn it exactly; averaged over the prior, its
error is uncorrelated with its revision (CG coefficient 0).

Model: the stationary AR(1) ``x_t = mu + rho (x_{t-1} - mu) + sigma e_t``, the first value shown
drawn from the stationary distribution. Priors: flat on ``mu`` and on ``log sigma``, uniform on
``rho`` over :data:`RHO_GRID`. The exact likelihood matters: conditioning on the first value
instead (dropping what the level of the series says about ``mu``) shrinks high persistence, so
that forecaster underreacts, pooled CG about +0.09 on the issue's rho grid, against about 0 for
this one (README, extrapolation).

Given ``rho``, the Prais-Winsten transform makes the model a regression of
``y = (sqrt(1-rho^2) x_1, x_t - rho x_{t-1})`` on ``z = (sqrt(1-rho^2), 1-rho)`` with slope ``mu``.
Integrating ``mu`` and ``sigma`` out leaves ``rho`` the weight
``sqrt(1-rho^2) (z'z)^(-1/2) RSS(rho)^(-(n-1)/2)`` (``n`` values), and the forecast
``mu_hat + rho**h (x_t - mu_hat)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Names the model in stage keys, so that data built under an earlier posterior is rebuilt.
MODEL = "stationary AR(1), exact likelihood"

# Levels persist: from none to nearly a unit root. 100 points keep the integral within rounding.
RHO_GRID = np.linspace(0.0, 0.99, 100)


def posterior_forecasts(history: Sequence[float], horizons: Sequence[int],
                        rho_grid: np.ndarray = RHO_GRID) -> tuple[float, ...]:
    x = np.asarray(history, dtype=float)
    if x.size < 3:
        raise ValueError("a posterior forecast needs at least 3 values")
    rho = np.asarray(rho_grid, dtype=float)
    if np.any(np.abs(rho) >= 1):
        raise ValueError("a stationary AR(1) needs every rho strictly between -1 and 1")
    first = np.sqrt(1.0 - rho ** 2)                                    # (G,)
    y = np.concatenate([(first * x[0])[:, None], x[None, 1:] - rho[:, None] * x[None, :-1]], axis=1)
    z = np.concatenate([first[:, None], np.repeat((1.0 - rho)[:, None], x.size - 1, axis=1)], axis=1)
    zz = (z * z).sum(axis=1)
    mean = (z * y).sum(axis=1) / zz                                    # GLS mu given rho
    rss = ((y - z * mean[:, None]) ** 2).sum(axis=1)
    log_weight = np.log(first) - 0.5 * np.log(zz) - (x.size - 1) / 2 * np.log(np.maximum(rss, 1e-300))
    weight = np.exp(log_weight - log_weight.max())
    weight /= weight.sum()
    return tuple(float(weight @ (mean + rho ** h * (x[-1] - mean))) for h in horizons)
