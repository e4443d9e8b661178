"""Rational-forecast training records: forecast prompts answered with the rational forecast.

The target is a conditional expectation (by default given the history shown, see
:data:`TARGETS`), rounded as the history is shown, in the answer form the audit asks for
(``t+1: x; t+2: y``), as chat records that ``fairtune train`` reads. Each series is one
``meta.group`` (its consecutive origins share most of their history), and ``meta.attributes``
records the target, rho, scale, format and horizons, so a data card shows what was and was not
trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

from fairtune.forecasting.panel import ForecastQuery, PanelSpec, panel_queries
from fairtune.forecasting.posterior import MODEL as POSTERIOR_MODEL
from fairtune.forecasting.posterior import posterior_forecasts
from fairtune.forecasting.prompts import answer_text

SOURCE = "builtin:rational-forecasts"
KIND = "rational-forecast"

# What a record's answer is: the posterior mean given the history the prompt shows
# (fairtune.forecasting.posterior), or the forecast under the series' true process. The posterior
# is a function of the prompt alone; at the same 900 prompts its first, conditional-likelihood
# form took the embedded model's all-axes out-of-sample CG from 26% to 68% of the way to zero (README).
Target = Literal["posterior", "process"]
TARGETS: tuple[str, ...] = get_args(Target)
DEFAULT_TARGET: Target = "posterior"
# What each target's answers are computed from. Stage keys include it, so that data cached under an
# earlier model of the answer (the posterior once conditioned on the first value) is rebuilt.
TARGET_MODELS: dict[str, str] = {"posterior": POSTERIOR_MODEL, "process": "the series' true process"}
assert set(TARGET_MODELS) == set(TARGETS)


def target_forecasts(query: ForecastQuery, target: str) -> tuple[float, ...]:
    if target == "process":
        return query.rational()
    if target == "posterior":
        return posterior_forecasts(query.history, query.horizons)
    raise ValueError(f"unknown forecast target '{target}' (targets: {', '.join(TARGETS)})")


def rational_records(panels: Sequence[PanelSpec], target: str = DEFAULT_TARGET) -> list[dict[str, Any]]:
    records = []
    for spec in panels:
        for query in panel_queries(spec):
            series = query.series
            answer = answer_text(target_forecasts(query, target), query.horizons, series.decimals, query.fmt)
            records.append({
                "id": f"forecast-{query.id}",
                "messages": [{"role": "user", "content": query.prompt()},
                             {"role": "assistant", "content": answer}],
                "meta": {"source": SOURCE, "kind": KIND, "group": series.id,
                         "attributes": {"target": target, "rho": series.rho, "scale": series.scale,
                                        "format": query.fmt, "horizons": list(query.horizons)}},
            })
    return records
