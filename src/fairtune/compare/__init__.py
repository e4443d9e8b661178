"""``fairtune compare``: two runs of the same audits, item by item (see :mod:`fairtune.compare.paired`),
checked against gates (:mod:`fairtune.compare.gates`), and written as comparison.json (the schema
reports read) and comparison.md (for people).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairtune.compare.paired import (AuditComparison, Comparison, MetricComparison, compare_audit, compare_runs,
                                     improvement, read_runs)

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"


def write_comparison(comparison: Comparison, out: str | Path) -> tuple[Path, Path]:
    """comparison.json and comparison.md in ``out``, each written atomically."""
    from fairtune.io import atomic_open, write_json

    out = Path(out)
    write_json(out / COMPARISON_JSON, comparison.as_dict())
    with atomic_open(out / COMPARISON_MD) as handle:
        handle.write(comparison_markdown(comparison))
    return out / COMPARISON_JSON, out / COMPARISON_MD


def format_number(x: float | None, *, sign: bool = False, digits: int = 4) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:+.{digits}g}" if sign else f"{x:.{digits}g}"


def format_delta(m: MetricComparison, digits: int = 4) -> str:
    text = format_number(m.delta, sign=True, digits=digits)
    if m.ci_low is not None:
        text += (f" [{format_number(m.ci_low, sign=True, digits=digits)}, "
                 f"{format_number(m.ci_high, sign=True, digits=digits)}]")
    return text


def format_p(m: MetricComparison) -> str:
    if m.p_value is None:
        return "-"
    return f"{m.p_value:.2g} ({m.p_holm:.2g})" if m.p_holm is not None else f"{m.p_value:.2g}"


def _rows(audit: AuditComparison, digits: int = 4) -> list[tuple[MetricComparison, list[str]]]:
    return [(m, [m.metric if m.group == "overall" else f"{m.metric} [{m.group}]", format_number(m.a, digits=digits),
                 format_number(m.b, digits=digits), format_delta(m, digits), m.test or "-", format_p(m), m.change])
            for m in audit.metrics]


HEADER = ("metric", "A", "B", "delta [95% CI]", "test", "p (Holm)", "change")
CHANGE_STYLE = {"improved": "green", "regressed": "bold red", "unchanged": "", "unknown": "dim"}


def comparison_tables(comparison: Comparison) -> list[Any]:
    """One rich table per audit compared, then one of the gates (when there are any)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    tables = []
    for name, audit in comparison.audits.items():
        table = Table(title=f"{name}: {audit.n_paired} paired items (only in A: {audit.n_only_a}, only in B: "
                            f"{audit.n_only_b})", box=box.SIMPLE_HEAD, pad_edge=False,
                      caption=f"delta = B - A; paired bootstrap over {comparison.n_resamples} resamples, seed "
                              f"{comparison.seed}")
        for column in HEADER:
            table.add_column(column, justify="left" if column in ("metric", "test", "change") else "right")
        for m, cells in _rows(audit, digits=3):
            table.add_row(*[Text(c) for c in cells[:-1]], Text(cells[-1], style=CHANGE_STYLE[m.change]))
        tables.append(table)
    if comparison.gates:
        table = Table(title="gates", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("result", "audit", "metric", "rule", "threshold", "observed", "message"):
            table.add_column(column)
        for g in comparison.gates:
            table.add_row(Text("PASS", style="green") if g.passed else Text("FAIL", style="bold red"),
                          Text(g.audit), Text(g.metric), g.rule, format_number(g.threshold),
                          format_number(g.observed), Text(g.message))
        tables.append(table)
    return tables


def comparison_markdown(comparison: Comparison) -> str:
    """comparison.md: the same tables as the terminal, every name from the runs escaped."""
    from fairtune.markdown import escape_markdown as e

    n_tested = sum(m.p_value is not None for a in comparison.audits.values() for m in a.metrics)
    lines = [f"# Comparison: {e(comparison.run_a)} (A) vs {e(comparison.run_b)} (B)", "",
             f"delta = B - A on the items both runs hold; 95% paired bootstrap intervals ({comparison.n_resamples} "
             f"resamples, seed {comparison.seed}); p-values Holm-corrected over all {n_tested} tests.", ""]
    for label, names in (("Only in A", comparison.only_in_a), ("Only in B", comparison.only_in_b)):
        if names:
            lines += [f"{label} (not compared): {', '.join(e(n) for n in names)}", ""]
    for name, audit in comparison.audits.items():
        lines += [f"## {e(name)}", "", f"{audit.n_paired} paired items; only in A: {audit.n_only_a}, only in B: "
                                       f"{audit.n_only_b}.", "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        for m, cells in _rows(audit):
            cells[-1] = f"**{m.change}**" if m.change == "regressed" else m.change
            lines.append("| " + " | ".join([e(cells[0]), *cells[1:]]) + " |")
        lines.append("")
    lines += ["## Gates", ""]
    if comparison.gates:
        lines += ["| result | audit | metric | rule | threshold | observed | message |",
                  "|---|---|---|---|---|---|---|"]
        for g in comparison.gates:
            lines.append(f"| {'PASS' if g.passed else '**FAIL**'} | {e(g.audit)} | {e(g.metric)} | {g.rule} | "
                         f"{format_number(g.threshold)} | {format_number(g.observed)} | {e(g.message)} |")
        failed = sum(not g.passed for g in comparison.gates)
        lines += ["", f"{failed} of {len(comparison.gates)} gates failed." if failed else
                  f"All {len(comparison.gates)} gates passed."]
    else:
        lines.append("No gates were set.")
    return "\n".join(lines) + "\n"


__all__ = ["AuditComparison", "Comparison", "MetricComparison", "compare_audit", "compare_runs", "comparison_markdown",
           "comparison_tables", "improvement", "read_runs", "write_comparison"]
