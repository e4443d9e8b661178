"""Rational-forecast training records: forecast prompts answered with the rational forecast.

The target is the conditional expectation under the series' true process, rounded as the
history is shown, in the answer form the audit asks for (``t+1: x; t+2: y``), as chat records
that ``fairtune train`` reads. Each series is one ``meta.group`` (its consecutive origins share
most of their history), and ``meta.attributes`` records rho, scale, format and horizons, so a
data card shows what was and was not trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fairtune.forecasting.panel import PanelSpec, panel_queries
from fairtune.forecasting.prompts import answer_text

SOURCE = "builtin:rational-forecasts"
KIND = "rational-forecast"


def rational_records(panels: Sequence[PanelSpec]) -> list[dict[str, Any]]:
    records = []
    for spec in panels:
        for query in panel_queries(spec):
            series = query.series
            target = answer_text(query.rational(), query.horizons, series.decimals, query.fmt)
            records.append({
                "id": f"forecast-{query.id}",
                "messages": [{"role": "user", "content": query.prompt()},
                             {"role": "assistant", "content": target}],
                "meta": {"source": SOURCE, "kind": KIND, "group": series.id,
                         "attributes": {"rho": series.rho, "scale": series.scale, "format": query.fmt,
                                        "horizons": list(query.horizons)}},
            })
    return records
