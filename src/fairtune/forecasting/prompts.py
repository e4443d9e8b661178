"""Forecast prompts and answers: how a history is shown, what is asked, and how replies parse.

The question follows Afrouzi et al. (2023): the recent history, then forecasts for two horizons
asked together. Number *formats* are part of the design because fine-tuning must generalise
across them: ``comma`` (a comma-separated list), ``spaces`` (space-separated), ``lines`` (one
``t-k: value`` per line) and ``percent`` (signed percentages, for return-like series).

Parsing never drops a reply silently: :func:`parse_forecasts` says why a reply has no usable
forecast (``no-number``, ``missing-horizon``, ``implausible``), and the audit counts each reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

FORMATS = ("comma", "spaces", "lines", "percent")

# The answer form we ask for and train on: "t+1: 51.4; t+2: 50.9".
ANSWER_SEPARATOR = "; "

RATIONAL_SYSTEM_PROMPT = (
    "You are a rational forecaster. Forecast the conditional expectation of future values given the "
    "whole history: estimate how strongly the series reverts to its long-run mean, do not extrapolate "
    "the most recent change, and shrink forecasts toward the mean more at longer horizons.")


def format_number(value: float, decimals: int, fmt: str) -> str:
    text = f"{value:.{decimals}f}"
    if fmt == "percent":
        return ("+" if value >= 0 else "") + text + "%"
    return text


def render_history(values: Sequence[float], decimals: int, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown number format '{fmt}' (formats: {', '.join(FORMATS)})")
    shown = [format_number(v, decimals, fmt) for v in values]
    if fmt == "lines":
        last = len(shown) - 1
        return "\n".join(f"t-{last - i}: {v}" if i < last else f"t: {v}" for i, v in enumerate(shown))
    return (" " if fmt == "spaces" else ", ").join(shown)


def forecast_prompt(history_text: str, horizons: Sequence[int]) -> str:
    # Short on purpose: a 135M model answers this form, and ignores longer instructions.
    wanted = " and ".join(f"t+{h}" for h in horizons)
    form = ANSWER_SEPARATOR.join(f"t+{h}: <number>" for h in horizons)
    return f"Time series (oldest first):\n{history_text}\n\nForecast the values at {wanted}. Answer as \"{form}\"."


def answer_prefix(horizons: Sequence[int]) -> str:
    """How the assistant's reply is started at audit time, so that small models answer in form
    (training targets begin with the same text)."""
    return f"t+{horizons[0]}:"


def answer_text(forecasts: Sequence[float], horizons: Sequence[int], decimals: int, fmt: str) -> str:
    return ANSWER_SEPARATOR.join(f"t+{h}: {format_number(v, decimals, fmt)}" for h, v in zip(horizons, forecasts))


_NUMBER = r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+\u2212]?\.\d+"
_LABELLED = re.compile(r"t\s*\+\s*(\d+)\s*(?:\)|\])?\s*(?:[:=]|is|->|\u2192)\s*(" + _NUMBER + r")", re.I)
_LABEL = re.compile(r"\bt\s*[+-]\s*\d+\b|\bt\b\s*:", re.I)
_ANY = re.compile(_NUMBER)


def _to_float(text: str) -> float:
    return float(text.replace("\u2212", "-").replace(",", ""))


@dataclass(frozen=True)
class Parsed:
    """Forecasts by horizon, or ``None`` with the ``status`` saying why."""

    forecasts: tuple[float, ...] | None
    status: str           # ok, unlabelled, no-number, missing-horizon, implausible


def parse_forecasts(reply: str, horizons: Sequence[int], history: Sequence[float]) -> Parsed:
    """Forecasts for ``horizons`` from a reply: labelled ``t+h: x`` first, else the first numbers
    in order (labels removed). A forecast further from the history's range than ten times that
    range is ``implausible`` (a misread, not a forecast) and the reply is set aside, counted."""
    labelled: dict[int, float] = {}
    for match in _LABELLED.finditer(reply):
        labelled.setdefault(int(match.group(1)), _to_float(match.group(2)))
    if all(h in labelled for h in horizons):
        values, status = tuple(labelled[h] for h in horizons), "ok"
    else:
        numbers = [_to_float(m) for m in _ANY.findall(_LABEL.sub(" ", reply))]
        if not numbers:
            return Parsed(None, "no-number")
        if len(numbers) < len(horizons):
            return Parsed(None, "missing-horizon")
        values, status = tuple(numbers[: len(horizons)]), "unlabelled"
    low, high = min(history), max(history)
    span = max(high - low, 1e-9)
    if any(v < low - 10 * span or v > high + 10 * span for v in values):
        return Parsed(None, "implausible")
    return Parsed(values, status)
