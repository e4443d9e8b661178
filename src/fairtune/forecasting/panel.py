"""Forecast panels: which series, which forecast origins, shown how.

A :class:`PanelSpec` (a small JSON/YAML-able pydantic model) fixes everything an extrapolation
audit or a rational-forecast dataset is built from: persistence levels, series per level, history
length, consecutive forecast origins per series, the two horizons asked, scale, number format and
seed. The named splits keep training and out-of-sample evaluation apart on every axis the issue
asks for: rho levels, scale, number format (and, in ``horizon-out-of-sample``, horizons).

Each series yields ``origins`` queries at consecutive origins ``t0 .. t0+origins-1``: consecutive
origins are what the forecast-revision regression needs (the revision of the forecast of
``x_{t+h}`` between origins ``t-1`` and ``t``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fairtune.forecasting.prompts import FORMATS, forecast_prompt, render_history
from fairtune.forecasting.simulate import SCALES, Series, simulate_panel


class PanelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rhos: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95)
    series_per_rho: int = Field(8, ge=1)
    history: int = Field(16, ge=4, description="values shown before the forecast origin (included)")
    origins: int = Field(6, ge=1, description="consecutive forecast origins per series (an audit needs 2 or "
                                              "more: the revision regression pairs consecutive origins)")
    horizons: tuple[int, int] = (1, 2)
    scale: Literal["tens", "hundreds", "thousands", "units", "returns"] = "tens"
    format: Literal["comma", "spaces", "lines", "percent"] = "comma"
    seed: int = 0

    @field_validator("rhos")
    @classmethod
    def _rhos(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("at least one rho level")
        for rho in value:
            if not -1.0 < rho < 1.0:
                raise ValueError(f"rho {rho} must lie strictly between -1 and 1")
        if len(set(value)) != len(value):
            raise ValueError("rho levels repeat")
        return value

    @model_validator(mode="after")
    def _horizons(self) -> PanelSpec:
        first, second = self.horizons
        if first < 1 or second != first + 1:
            raise ValueError(f"horizons must be two consecutive steps such as [1, 2], not {list(self.horizons)}")
        return self

    @property
    def length(self) -> int:
        """Values simulated per series: the history, the later origins and the last horizon."""
        return self.history + self.origins - 1 + self.horizons[1]

    def series(self) -> list[Series]:
        return simulate_panel(self.rhos, series_per_rho=self.series_per_rho, scale=self.scale,
                              length=self.length, seed=self.seed)


TRAIN_RHOS = (0.1, 0.3, 0.5, 0.7, 0.9)

# Rational-forecast training data: three scales (one with whole numbers) and two formats, so that
# what is learnt is the forecasting rule rather than one look of the numbers. On the embedded model,
# adding the thousands panel took the rho-only out-of-sample CG from 62% to 78% of the way to zero;
# with posterior targets, 60 series a level (2,700 prompts) came closer to the feasible forecaster
# than 20 or 40, on every held-out panel (README).
TRAIN_SERIES_PER_RHO = 60
TRAIN_PANELS: tuple[PanelSpec, ...] = (
    PanelSpec(rhos=TRAIN_RHOS, series_per_rho=TRAIN_SERIES_PER_RHO, origins=3, scale="tens", format="comma",
              seed=1000),
    PanelSpec(rhos=TRAIN_RHOS, series_per_rho=TRAIN_SERIES_PER_RHO, origins=3, scale="units", format="spaces",
              seed=1001),
    PanelSpec(rhos=TRAIN_RHOS, series_per_rho=TRAIN_SERIES_PER_RHO, origins=3, scale="thousands",
              format="comma", seed=1002),
)

# Evaluation panels. In-sample shares the training levels, scale and format (fresh seeds);
# out-of-sample holds out every axis the issue names at once: rho levels (the grid, none of
# it trained on), scale, number format, and in horizon-out-of-sample the horizons as well.
# rho-out-of-sample holds out the rho levels alone, so a report can tell a rule that does not
# carry to new persistence levels from numbers the model has never seen written that way.
SPLITS: dict[str, PanelSpec] = {
    "in-sample": PanelSpec(rhos=TRAIN_RHOS, series_per_rho=8, seed=2000),
    "out-of-sample": PanelSpec(rhos=(0.0, 0.2, 0.4, 0.6, 0.8, 0.95), series_per_rho=8, scale="hundreds",
                               format="lines", seed=3000),
    "rho-out-of-sample": PanelSpec(rhos=(0.0, 0.2, 0.4, 0.6, 0.8, 0.95), series_per_rho=8, seed=3500),
    "horizon-out-of-sample": PanelSpec(rhos=(0.0, 0.2, 0.4, 0.6, 0.8, 0.95), series_per_rho=8,
                                       horizons=(2, 3), scale="hundreds", format="lines", seed=4000),
    "returns": PanelSpec(rhos=(-0.3, -0.1), series_per_rho=12, scale="returns", format="percent", seed=5000),
}
assert all(s.scale in SCALES and s.format in FORMATS for s in (*TRAIN_PANELS, *SPLITS.values()))


def held_out_axes(train: tuple[PanelSpec, ...], test: PanelSpec) -> dict[str, bool]:
    """Which axes of ``test`` training never showed (horizons: any horizon never trained on)."""
    return {"rho": not {r for p in train for r in p.rhos} & set(test.rhos),
            "scale": test.scale not in {p.scale for p in train},
            "format": test.format not in {p.format for p in train},
            "horizons": bool(set(test.horizons) - {h for p in train for h in p.horizons})}


@dataclass(frozen=True)
class ForecastQuery:
    """One question: a series' history up to ``origin``, and forecasts for ``horizons``.

    The instruction text is built by :meth:`prompt`, not stored: the contamination guard reads an
    item's string fields, and what must not leak into training data is the history, not the
    instruction every forecast prompt shares.
    """

    id: str
    series: Series
    origin: int                    # index into series.values of the last value shown
    horizons: tuple[int, int]
    fmt: str
    history: tuple[float, ...]
    history_text: str              # the history as the model is shown it

    def prompt(self) -> str:
        return forecast_prompt(self.history_text, self.horizons)

    def rational(self) -> tuple[float, ...]:
        return tuple(self.series.rational(self.origin, h) for h in self.horizons)

    def realised(self) -> tuple[float, ...]:
        return tuple(self.series.values[self.origin + h] for h in self.horizons)


def queries_for(series: list[Series], *, history: int, origins: int, horizons: tuple[int, int],
                fmt: str) -> list[ForecastQuery]:
    """``origins`` consecutive queries per series, ending where the last horizon is still observed."""
    queries = []
    for s in series:
        last = len(s.values) - 1 - horizons[1]
        for origin in range(last - origins + 1, last + 1):
            shown = s.values[origin - history + 1: origin + 1]
            queries.append(ForecastQuery(f"{s.id}@{origin}", s, origin, horizons, fmt, tuple(shown),
                                         render_history(shown, s.decimals, fmt)))
    return queries


def panel_queries(spec: PanelSpec) -> list[ForecastQuery]:
    return queries_for(spec.series(), history=spec.history, origins=spec.origins, horizons=spec.horizons,
                       fmt=spec.format)
