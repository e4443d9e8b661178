"""Helpers that turn a record stream into a MetricTable (overall first, then each group)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from fairtune.audits.base import MetricTable
from fairtune.stats import bootstrap_mean

Extractor = Callable[[dict[str, Any]], Any]


def grouped_means(records: Iterable[dict[str, Any]], metrics: dict[str, Extractor], *, seed: int,
                  group: Callable[[dict[str, Any]], str | None] = lambda r: r["group"]) -> MetricTable:
    """Mean of each metric with a bootstrap interval, overall and per group.

    An extractor returning ``None`` leaves that record out of that metric (e.g. an unparsable
    answer), so each estimate's n says how many records it rests on.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups["overall"].append(record)
        if (name := group(record)) is not None:
            groups[name].append(record)
    table = MetricTable()
    for name in ["overall", *sorted(g for g in groups if g != "overall")]:
        for metric, extract in metrics.items():
            values = [v for v in (extract(r) for r in groups[name]) if v is not None]
            table.add(name, metric, bootstrap_mean([float(v) for v in values], seed=seed))
    return table
