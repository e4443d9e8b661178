"""Terminal rendering of run summaries (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _format(metric: str, estimate: dict[str, Any]) -> str:
    value, low, high = estimate["value"], estimate["ci_low"], estimate["ci_high"]
    if value is None:
        return "-"
    scale, unit = (100, "%") if metric.startswith("pct_") else (1, "")
    text = f"{value * scale:.1f}{unit}" if scale != 1 else f"{value:.3f}"
    if low is not None:
        text += f" [{low * scale:.1f}, {high * scale:.1f}]" if scale != 1 else f" [{low:.3f}, {high:.3f}]"
    return text


def summary_table(summary: dict[str, Any]) -> Table:
    """One row per group (overall first), one column per metric, value [95% CI] and n."""
    metrics = summary["metrics"]
    names = list(next(iter(metrics.values())).keys()) if metrics else []
    table = Table(title=f"{summary['suite']} - {summary['model']['spec']} "
                        f"({summary['n_items']} items, seed {summary['seed']})")
    table.add_column("group")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(f"{name} [95% CI]", justify="right")
    for group, row in metrics.items():
        n = next(iter(row.values()))["n"]
        table.add_row(group, str(n), *[_format(name, row[name]) for name in names],
                      end_section=group == "overall")
    return table
