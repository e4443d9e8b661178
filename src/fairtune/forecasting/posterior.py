"""The rational forecast given only what the forecaster is shown: the AR(1) posterior mean.

A forecaster that sees sixteen values does not know the process's mean, persistence or noise,
so its rational expectation is the posterior predictive mean, not the forecast under the true
parameters (which also carries the truth the history does not reveal). As a training target it
is a function of the prompt alone, so a model can learn it exactly; averaged over the prior, its
error is uncorrelated with its revision (CG coefficient 0). On a panel whose rho levels reach 0.95
it shrinks those series' persistence and underreacts (pooled CG about +0.07 to +0.10; README).

Model: ``x_t = c + rho x_{t-1} + sigma e_t`` given the first value shown. Priors: flat on ``c``
and on ``log sigma``, uniform on ``rho`` over :data:`RHO_GRID`. Integrating ``c`` and ``sigma``
out leaves each ``rho`` the weight ``RSS(rho) ** (-(n - 1) / 2)`` (``n`` transitions), and given
``rho`` the forecast ``c_hat (1 - rho**h) / (1 - rho) + rho**h x_t``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Levels persist: from none to nearly a unit root. 100 points keep the integral within rounding.
RHO_GRID = np.linspace(0.0, 0.99, 100)


def posterior_forecasts(history: Sequence[float], horizons: Sequence[int],
                        rho_grid: np.ndarray = RHO_GRID) -> tuple[float, ...]:
    x = np.asarray(history, dtype=float)
    if x.size < 3:
        raise ValueError("a posterior forecast needs at least 3 values")
    previous, current = x[:-1], x[1:]
    shocks = current[None, :] - rho_grid[:, None] * previous[None, :]       # c + sigma e_t, per rho
    intercept = shocks.mean(axis=1)
    rss = ((shocks - intercept[:, None]) ** 2).sum(axis=1)
    log_weight = -(current.size - 1) / 2 * np.log(np.maximum(rss, 1e-300))
    weight = np.exp(log_weight - log_weight.max())
    weight /= weight.sum()
    forecasts = []
    for h in horizons:
        # sum of rho**k for k < h, written so that rho = 1 needs no special case
        geometric = (rho_grid[:, None] ** np.arange(h)[None, :]).sum(axis=1)
        forecasts.append(float(weight @ (intercept * geometric + rho_grid ** h * x[-1])))
    return tuple(forecasts)
