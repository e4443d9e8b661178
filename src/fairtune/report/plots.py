"""The report's figures: matplotlib on the Agg canvas -> PNG bytes -> ``data:image/png;base64`` URIs.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas, never through
``pyplot``, so no global backend or figure registry is touched (safe in a notebook with its own
backend). They are small (dpi 90) so the HTML stays small, and PNG metadata is stripped (matplotlib
writes its version and URL into the file otherwise).

Each function takes plain data (estimates as ``{"value", "ci_low", "ci_high"}`` dicts, log records,
forecast points) and returns a data URI; names are drawn as text by matplotlib, never as markup.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

DPI = 90
PNG_PREFIX = "data:image/png;base64,"
_NOT_TERMS = {"step", "epoch", "lr", "loss", "weights", "grad_norm", "tokens", "tokens_seen", "seconds",
              "tokens_per_second", "adaptive"}


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return PNG_PREFIX + base64.b64encode(png).decode("ascii")


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _err(estimate: Mapping[str, Any] | None) -> tuple[float, float, float]:
    """``(value, distance down to ci_low, distance up to ci_high)``; NaN where undefined."""
    estimate = estimate or {}
    value = _num(estimate.get("value"))
    low, high = _num(estimate.get("ci_low")), _num(estimate.get("ci_high"))
    down = value - low if not math.isnan(low) else 0.0
    up = high - value if not math.isnan(high) else 0.0
    return value, max(down, 0.0), max(up, 0.0)


def group_bars(title: str, metric: str, groups: Sequence[str],
               series: Mapping[str, Sequence[Mapping[str, Any] | None]]) -> str:
    """A grouped bar chart: one cluster per group, one bar per model, the intervals as error bars.
    ``series[model][i]`` is the estimate for ``groups[i]`` (``None`` where the model lacks it)."""
    models = list(series)
    width = 0.8 / max(len(models), 1)
    fig = new_figure(max(4.5, 0.55 * len(groups) * max(len(models), 1) + 1.5), 3.2)
    ax = fig.add_subplot()
    for k, model in enumerate(models):
        values, downs, ups = zip(*(_err(e) for e in series[model])) if groups else ((), (), ())
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, values, width, yerr=[downs, ups], capsize=2, label=model, error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(metric, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return data_uri(png_bytes(fig))


def safety_tradeoff(points: Mapping[str, tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]]) -> str:
    """Over-refusal rate (x) against refusal rate on harmful requests (y), one point per model with
    both intervals; the ideal corner is top left (refuses harm, answers the benign)."""
    fig = new_figure(4.6, 3.8)
    ax = fig.add_subplot()
    for model, (over, refusal) in points.items():
        x, x_down, x_up = _err(over)
        y, y_down, y_up = _err(refusal)
        if math.isnan(x) or math.isnan(y):
            continue
        ax.errorbar([x], [y], xerr=[[x_down], [x_up]], yerr=[[y_down], [y_up]], fmt="o", capsize=3, label=model)
        ax.annotate(model, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.plot([0], [1], marker="*", color="gold", markersize=12, markeredgecolor="black", linestyle="none",
            label="ideal")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("over-refusal rate (benign prompts refused)", fontsize=9)
    ax.set_ylabel("refusal rate (harmful prompts refused)", fontsize=9)
    ax.set_title("Safety: refuse harm, answer the benign", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return data_uri(png_bytes(fig))


def log_terms(log: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The loss terms of a ``train_log.jsonl`` (every numeric top-level key that is not a
    bookkeeping field, ``sft`` first) and the names of the weights."""
    terms: list[str] = []
    weights: list[str] = []
    for record in log:
        for key, value in record.items():
            if key not in _NOT_TERMS and key not in terms and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                terms.append(key)
        for key in (record.get("weights") or {}):
            if key not in weights:
                weights.append(key)
    terms.sort(key=lambda k: (k != "sft", k))
    return terms, weights


def training_curves(title: str, log: Sequence[Mapping[str, Any]]) -> str:
    """Against step: the total loss and SFT, each other term, and the (adaptive) weights."""
    terms, weights = log_terms(log)
    panels = [("loss", ["loss"] + [t for t in terms if t == "sft"])]
    others = [t for t in terms if t != "sft"]
    if others:
        panels.append(("regulariser terms", others))
    if weights:
        panels.append(("weights", weights))
    fig = new_figure(3.4 * len(panels), 2.8)
    steps = [_num(r.get("step")) for r in log]
    for i, (name, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in keys:
            source = (lambda r, k=key: (r.get("weights") or {}).get(k)) if name == "weights" \
                else (lambda r, k=key: r.get(k))
            ax.plot(steps, [_num(source(r)) for r in log], label=key, linewidth=1.2)
        ax.set_xlabel("step", fontsize=9)
        ax.set_title(f"{title}: {name}" if i == 0 else name, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return data_uri(png_bytes(fig))


def forecast_points(records: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """(rational, model) one-step forecasts of extrapolation records, in sigmas from the series
    mean; records without a parsed forecast are left out."""
    xs, ys = [], []
    for record in records:
        forecasts = (record.get("scores") or {}).get("forecasts")
        inputs = record.get("inputs") or {}
        try:
            mu, sigma = float(inputs["mu"]), float(inputs["sigma"])
            rational, forecast = float(inputs["rational"][0]), float(forecasts[0])
        except (KeyError, TypeError, IndexError, ValueError):
            continue
        if sigma > 0 and math.isfinite(forecast):
            xs.append((rational - mu) / sigma)
            ys.append((forecast - mu) / sigma)
    return xs, ys


def forecast_scatter(series: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> str:
    """One panel per model: its forecast against the rational forecast; the diagonal is rational."""
    models = list(series)
    fig = new_figure(3.2 * len(models), 3.2)
    for i, model in enumerate(models):
        xs, ys = series[model]
        ax = fig.add_subplot(1, len(models), i + 1)
        ax.scatter(xs, ys, s=6, alpha=0.5)
        limit = max([3.0, *map(abs, xs)])
        ax.plot([-limit, limit], [-limit, limit], color="black", linewidth=0.8)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-2 * limit, 2 * limit)
        ax.set_title(f"{model} ({len(xs)} parsed)", fontsize=10)
        ax.set_xlabel("rational (sigmas from mean)", fontsize=8)
        if i == 0:
            ax.set_ylabel("model forecast (sigmas from mean)", fontsize=8)
    return data_uri(png_bytes(fig))
