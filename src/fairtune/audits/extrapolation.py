"""``extrapolation``: do the model's numeric forecasts overreact to recent moves?

The design of Afrouzi et al. (2023): the model sees the recent history of a series and gives
forecasts one and two steps ahead, through the chat template, at several consecutive origins of
each series. Series are simulated AR(1) processes at several persistence levels (the built-in
suite: rho in 0, 0.2, 0.4, 0.6, 0.8, 0.95, eight series each, six origins), so the rational
forecast ``mu + rho**h (x_t - mu)`` is known exactly.

Measures, pooled and per rho level (:mod:`fairtune.forecasting.analysis`): the
Coibion-Gorodnichenko error-on-revision coefficient (negative = overreaction, 0 = rational), the
loading of the deviation from the rational forecast on the latest change (positive =
extrapolation), implied vs true persistence, squared deviation from the rational forecast and
the parse-failure rate. Replies are parsed leniently (``t+1: x`` labels, else the first numbers);
a reply without usable forecasts is kept as a record with its reason and counted, never dropped.

``--data`` takes a panel spec (``.json``/``.yaml``: the fields of
:class:`fairtune.forecasting.panel.PanelSpec`), ``split:NAME`` for a named split (``in-sample``,
``out-of-sample``, ``horizon-out-of-sample``, ``returns``), or the user's own series as a CSV
``series_id, time, value`` (an AR(1) fitted to each series stands in for the unknown process).
``--system-prompt`` adds a system prompt: the prompt baseline ("be a rational forecaster").
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from fairtune.audits import register_audit
from fairtune.audits.base import Audit, AuditOptions, AuditResult, Dataset, MetricTable
from fairtune.errors import InputError, from_validation
from fairtune.forecasting.analysis import extrapolation_metrics, revision_pairs, squared_deviation
from fairtune.forecasting.panel import SPLITS, ForecastQuery, PanelSpec, panel_queries, queries_for
from fairtune.forecasting.prompts import answer_prefix, parse_forecasts
from fairtune.forecasting.simulate import read_series_csv
from fairtune.io import sha256_file

SPEC_FORMAT = "panel-spec"
CSV_FORMAT = "series-csv"
SPLIT_PREFIX = "split:"
USER_GROUP = "user"


def _spec_dataset(spec: PanelSpec, source: str) -> Dataset:
    if spec.origins < 2:
        raise InputError(f"origins is {spec.origins}; the audit needs at least 2 consecutive forecast origins "
                         "per series (the revision regression pairs them)", file=source, field="origins")
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    return Dataset(panel_queries(spec), source, digest, SPEC_FORMAT,
                   settings={"spec": spec.model_dump(mode="json")})


def load_panel_spec(path: str | Path) -> PanelSpec:
    """A :class:`PanelSpec` from a JSON/YAML file; a bad key fails in one line naming it."""
    from pydantic import ValidationError

    from fairtune.readers import read_mapping

    try:
        return PanelSpec.model_validate(read_mapping(path))
    except ValidationError as exc:
        raise from_validation(exc, file=path) from None


def load_panel(path: str | Path | None) -> Dataset:
    """The queries of the built-in panel, a named split, a spec file or a CSV of series."""
    if path is None:
        return _spec_dataset(PanelSpec(), "builtin:extrapolation")
    text = str(path)
    if text.startswith(SPLIT_PREFIX):
        name = text[len(SPLIT_PREFIX):]
        if name not in SPLITS:
            raise InputError(f"unknown split '{name}' (splits: {', '.join(sorted(SPLITS))})", file=text)
        return _spec_dataset(SPLITS[name], text)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        dataset = _spec_dataset(load_panel_spec(path), str(path.resolve()))
        dataset.sha256 = sha256_file(path)
        return dataset
    if suffix == ".csv":
        spec = PanelSpec()
        series = read_series_csv(path, min_length=spec.length)
        queries = queries_for(series, history=spec.history, origins=spec.origins, horizons=spec.horizons,
                              fmt=spec.format)
        return Dataset(queries, str(path.resolve()), sha256_file(path), CSV_FORMAT)
    raise InputError("unknown file type: expected a panel spec (.json/.yaml), split:NAME, or a series CSV "
                     "(series_id, time, value)", file=path)


def group_of(query: ForecastQuery) -> str:
    return USER_GROUP if query.series.source == "fitted" else f"rho={query.series.rho:g}"


def forecast_record(suite: str, query: ForecastQuery, response: str) -> dict[str, Any]:
    parsed = parse_forecasts(response, query.horizons, query.history)
    series = query.series
    record = {
        "suite": suite, "id": query.id, "group": group_of(query),
        "inputs": {"series": series.id, "origin": query.origin, "rho": series.rho, "mu": series.mu,
                   "sigma": series.sigma, "scale": series.scale, "format": query.fmt,
                   "horizons": list(query.horizons), "last": query.history[-1], "previous": query.history[-2],
                   "rational": list(query.rational()), "realised": list(query.realised()),
                   "prompt": query.prompt()},
        "scores": {"response": response, "forecasts": list(parsed.forecasts) if parsed.forecasts else None,
                   "parse": parsed.status},
    }
    deviation = squared_deviation(record)
    record["outcome"] = {"parsed": int(parsed.forecasts is not None), "sq_dev_rational": deviation}
    return record


@register_audit
class ExtrapolationAudit(Audit):
    name = "extrapolation"
    description = ("numeric forecasts of AR(1) series: error-on-revision (CG) coefficient, extrapolation of "
                   "the latest change, implied persistence, distance from the rational forecast")
    data_format = ("panel spec .json/.yaml (PanelSpec fields), split:NAME (in-sample, out-of-sample, "
                   "horizon-out-of-sample, returns), or CSV series_id, time, value")
    headline_metrics = ("cg_coefficient", "cg_coefficient_expected", "extrapolation_loading", "mse_vs_rational",
                        "parse_failure_rate")
    # implied_persistence (per rho) has no fixed goal: its rational value, rho**h, differs by group.
    metric_goals = {"cg_coefficient": 0.0, "cg_coefficient_expected": 0.0, "extrapolation_loading": 0.0,
                    "persistence_gap": 0.0, "mse_vs_rational": "lower", "parse_failure_rate": "lower"}
    bundles = ("forecasting",)
    accepts_system_prompt = True

    def load(self, path: Path | None, options: AuditOptions) -> Dataset:
        return load_panel(path)

    def cluster(self, record: dict[str, Any]) -> str:
        return record["inputs"]["series"]   # a series' origins form revision pairs: resample them together

    def reference_texts(self) -> list[tuple[str, str]]:
        """Histories of every named evaluation split, for the contamination guard: training data
        must not contain the series the in-sample and out-of-sample audits show."""
        return [(q.id, q.history_text) for spec in SPLITS.values() for q in panel_queries(spec)]

    def metrics(self, records: list[dict[str, Any]], *, seed: int) -> MetricTable:
        return extrapolation_metrics(records, seed=seed)

    def run(self, loaded: Any, dataset: Dataset, options: AuditOptions) -> AuditResult:
        from fairtune.engine.generation import GenerationEngine

        queries: list[ForecastQuery] = dataset.items
        engine = GenerationEngine.from_loaded(loaded, batch_size=options.generation_batch_size,
                                              max_new_tokens=options.max_new_tokens, progress=options.progress)
        # Queries of one panel share their horizons; the reply is started as "t+1:" (see prompts).
        prefill = answer_prefix(queries[0].horizons) if queries else ""
        replies = engine.generate([q.prompt() for q in queries], system=options.system_prompt, seed=options.seed,
                                  prefill=prefill)
        records = [forecast_record(self.name, q, g.text) for q, g in zip(queries, replies)]
        spec = dataset.settings.get("spec")
        details = {
            "parse_status": dict(Counter(r["scores"]["parse"] for r in records)),
            "n_revision_pairs": len(revision_pairs(records)),
            "system_prompt": options.system_prompt,
            "decoding": "greedy", "max_new_tokens": options.max_new_tokens, "reply_prefill": prefill,
            "rational_persistence": {f"rho={rho:g}": rho ** queries[0].horizons[0]
                                     for rho in sorted({q.series.rho for q in queries})}
            if spec is not None else None,
            "spec": spec,
            "benchmark": ("true process (simulated)" if spec is not None else
                          "AR(1) fitted by OLS to each whole series (in-sample benchmark)"),
        }
        return AuditResult(records, self.metrics(records, seed=options.seed), details)
