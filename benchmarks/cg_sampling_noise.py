"""How much of an 80%-of-the-way-to-zero verdict is sampling noise: the CG coefficient of forecasters
that need no model, over many panel seeds.

For each feasible or infeasible forecaster and each panel size, simulate ``--seeds`` panels on the
given rho grid, and print the mean and s.d. across panels of both forms of the pooled CG
coefficient (realised error, and error from the conditional expectation), and the share of panels
on which |CG| is within ``(1 - 0.8) * |base|``, i.e. on which a model that forecast exactly like
this would be scored as having moved 80% of the way from ``--base``.

Forecasters: ``process`` (the true process: infeasible, CG 0 by construction), ``posterior`` (the
training target: the stationary AR(1) posterior mean given the history shown), and
``conditional`` (the same posterior conditioned on the first value shown, the earlier target).

    python benchmarks/cg_sampling_noise.py                       # the issue's grid, base -0.4
    python benchmarks/cg_sampling_noise.py --rhos 0.05 0.2 0.4 0.6 0.8 0.97 --seeds 60
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fairtune.audits.extrapolation import forecast_record
from fairtune.forecasting.analysis import cg_coefficient, cg_coefficient_expected
from fairtune.forecasting.panel import PanelSpec, panel_queries
from fairtune.forecasting.posterior import RHO_GRID, posterior_forecasts
from fairtune.forecasting.prompts import answer_text
from fairtune.stats import point_estimates


def conditional_posterior(history, horizons) -> tuple[float, ...]:
    """The posterior that conditions on the first value (flat prior on the intercept)."""
    x = np.asarray(history, dtype=float)
    shocks = x[None, 1:] - RHO_GRID[:, None] * x[None, :-1]
    intercept = shocks.mean(axis=1)
    rss = ((shocks - intercept[:, None]) ** 2).sum(axis=1)
    log_weight = -(x.size - 2) / 2 * np.log(np.maximum(rss, 1e-300))
    weight = np.exp(log_weight - log_weight.max())
    weight /= weight.sum()
    out = []
    for h in horizons:
        geometric = (RHO_GRID[:, None] ** np.arange(h)[None, :]).sum(axis=1)
        out.append(float(weight @ (intercept * geometric + RHO_GRID ** h * x[-1])))
    return tuple(out)


FORECASTERS = {
    "process": lambda q: q.rational(),
    "posterior": lambda q: posterior_forecasts(q.history, q.horizons),
    "conditional": lambda q: conditional_posterior(q.history, q.horizons),
}


def panel_cg(spec: PanelSpec, forecaster) -> tuple[float, float]:
    records = [forecast_record("extrapolation", q, answer_text(forecaster(q), q.horizons, 4, q.fmt))
               for q in panel_queries(spec)]
    with point_estimates():
        return cg_coefficient(records).value, cg_coefficient_expected(records).value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 0.95])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 24], help="series per rho level")
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--base", type=float, default=-0.4, help="the base model's coefficient")
    parser.add_argument("--forecasters", nargs="+", default=list(FORECASTERS), choices=list(FORECASTERS))
    args = parser.parse_args()
    bound = (1 - 0.8) * abs(args.base)
    print(f"rho grid {args.rhos}; {args.seeds} panel seeds; 80% of the way from {args.base} means |CG| <= "
          f"{bound:.3f}")
    print("| forecaster | series per rho | realised CG: mean, s.d., passes | expected-error CG: mean, s.d., passes |")
    print("| --- | --- | --- | --- |")
    started = time.perf_counter()
    for name in args.forecasters:
        for size in args.sizes:
            values = np.array([panel_cg(PanelSpec(rhos=tuple(args.rhos), series_per_rho=size, seed=90_000 + seed),
                                        FORECASTERS[name]) for seed in range(args.seeds)])
            cells = [f"{v.mean():+.3f}, {v.std(ddof=1):.3f}, {np.mean(np.abs(v) <= bound):.0%}" for v in values.T]
            print(f"| {name} | {size} | {cells[0]} | {cells[1]} |", flush=True)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
