"""Terminal rendering of run summaries (rich tables)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table


def format_estimate(metric: str, estimate: dict[str, Any]) -> str:
    """``54.5 [47.3, 62.3]`` for rates (in percent), ``3.83 [3.37, 4.36]`` for other metrics."""
    value, low, high = estimate["value"], estimate["ci_low"], estimate["ci_high"]
    if value is None:
        return "-"
    scale = 100 if metric.startswith("pct_") else 1
    digits = 1 if scale == 100 else 2
    text = f"{value * scale:.{digits}f}"
    if low is not None:
        text += f" [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
    return text


def _header(name: str, width: int = 18) -> str:
    """Break a long metric name at an underscore so value columns stay narrow."""
    cut = name.rfind("_", 0, width)
    return name if len(name) <= width or cut < 1 else f"{name[:cut]}\n{name[cut:]}"


def summary_table(summary: dict[str, Any]) -> Table:
    """One row per group (overall first), one column per headline metric, value [95% CI] and n."""
    metrics = summary["metrics"]
    every = list(next(iter(metrics.values())).keys()) if metrics else []
    # The headline metrics fit a terminal; summary.json holds the rest.
    names = [m for m in summary.get("headline_metrics", []) if m in every] or every
    subject = summary["model"]["spec"] if summary.get("model") else "given responses"
    table = Table(title=f"{summary['suite']} - {subject} "
                        f"({summary['n_items']} items, seed {summary['seed']})", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="value [95% bootstrap interval]"
                          + ("; pct_*: % of pairs, 50 = no preference" if any(n.startswith("pct_") for n in names)
                             else ""))
    table.add_column("group")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(_header(name), justify="right", no_wrap=True)
    for group, row in metrics.items():
        n = max((row[name]["n"] for name in names if name in row), default=0)
        table.add_row(group, str(n), *[format_estimate(name, row[name]) if name in row else "-" for name in names],
                      end_section=group == "overall")
    return table
