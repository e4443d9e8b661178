"""Extrapolation bias: simulator, prompts and parsing, the regressions, the audit, the data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fairtune.audits.extrapolation import forecast_record, load_panel, load_panel_spec
from fairtune.errors import FairtuneError, InputError
from fairtune.forecasting.analysis import extrapolation_metrics
from fairtune.forecasting.panel import SPLITS, TRAIN_PANELS, PanelSpec, held_out_axes, panel_queries
from fairtune.forecasting.posterior import posterior_forecasts
from fairtune.forecasting.prompts import answer_text, parse_forecasts, render_history
from fairtune.forecasting.simulate import fit_ar1, read_series_csv, simulate_series


# --- simulator ---------------------------------------------------------------------------------

def test_simulation_is_a_pure_function_of_its_arguments():
    a = simulate_series(0.6, scale="tens", length=30, seed=7, index=3)
    assert a == simulate_series(0.6, scale="tens", length=30, seed=7, index=3)
    assert a.values != simulate_series(0.6, scale="tens", length=30, seed=8, index=3).values
    assert a.values != simulate_series(0.6, scale="tens", length=30, seed=7, index=4).values


@pytest.mark.parametrize("rho", [-0.3, 0.0, 0.5, 0.95])
def test_simulated_series_has_the_asked_persistence_mean_and_shocks(rho):
    s = simulate_series(rho, scale="hundreds", length=20000, seed=1, index=0)
    mu, fitted_rho, sigma = fit_ar1(s.values)
    assert abs(fitted_rho - rho) < 0.03
    assert abs(sigma - s.sigma) / s.sigma < 0.05
    assert abs(mu - s.mu) < 6 * s.sigma / (1 - rho) / math.sqrt(20000)


def test_non_stationary_rho_is_refused():
    with pytest.raises(ValueError, match="strictly between"):
        simulate_series(1.0, scale="tens", length=10, seed=0, index=0)


def test_rational_forecast_is_the_conditional_expectation():
    s = simulate_series(0.5, scale="tens", length=10, seed=0, index=0)
    assert s.rational(4, 1) == pytest.approx(s.mu + 0.5 * (s.values[4] - s.mu))
    assert s.rational(4, 2) == pytest.approx(s.mu + 0.25 * (s.values[4] - s.mu))


# --- the posterior forecast: rational given only the history shown ------------------------------

def test_posterior_forecast_on_a_one_point_grid_is_the_gls_forecast_given_that_rho():
    """Given rho, the stationary AR(1) is a regression with AR(1) errors: GLS (statsmodels) gives mu."""
    import statsmodels.api as sm
    from scipy.linalg import toeplitz

    history = simulate_series(0.5, scale="tens", length=16, seed=3, index=0).values
    x = np.asarray(history)
    covariance = toeplitz(0.5 ** np.arange(x.size)) / (1 - 0.25)
    mu = sm.GLS(x, np.ones((x.size, 1)), sigma=covariance).fit().params[0]
    one, two = posterior_forecasts(history, (1, 2), rho_grid=np.array([0.5]))
    assert one == pytest.approx(mu + 0.5 * (x[-1] - mu))
    assert two == pytest.approx(mu + 0.25 * (x[-1] - mu))


def test_posterior_forecast_finds_the_process_in_a_long_history_and_not_in_a_short_one():
    s = simulate_series(0.7, scale="hundreds", length=3000, seed=4, index=0)
    truth = [s.rational(len(s.values) - 1, h) for h in (1, 2)]
    assert posterior_forecasts(s.values, (1, 2)) == pytest.approx(truth, abs=0.05 * s.sigma)
    short = [posterior_forecasts(s.values[:t + 1][-16:], (1,))[0] - s.rational(t, 1) for t in range(20, 2000, 7)]
    assert np.mean(np.square(short)) > (0.1 * s.sigma) ** 2


def test_posterior_forecast_moves_with_the_numbers_shown():
    history = simulate_series(0.8, scale="units", length=16, seed=5, index=1).values
    forecasts = posterior_forecasts(history, (2, 3))
    moved = posterior_forecasts([100 + 3 * v for v in history], (2, 3))
    assert moved == pytest.approx([100 + 3 * f for f in forecasts])
    with pytest.raises(ValueError, match="at least 3"):
        posterior_forecasts([1.0, 2.0], (1, 2))


# --- prompts and parsing -------------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected, status", [
    ("t+1: 51.4; t+2: 50.9", (51.4, 50.9), "ok"),
    ("t+1: 51.4 t+2=50.9", (51.4, 50.9), "ok"),
    ("The forecast for t+1 is 57.1, and for t+2, it's 55", (57.1, 55.0), "unlabelled"),
    ("t+1: 1,012; t+2: 998", (1012.0, 998.0), "ok"),
    ("t+1: \u22120.5%; t+2: +0.25%", (-0.5, 0.25), "ok"),
    ("t+2: 50.1; t+1: 49.0", (49.0, 50.1), "ok"),
    ("I'm ready to assist. What's your task?", None, "no-number"),
    ("t+1: 51.4", None, "missing-horizon"),
    ("t+1: 51.4; t+2: 90000", None, "implausible"),
])
def test_parse_forecasts(reply, expected, status):
    parsed = parse_forecasts(reply, (1, 2), [40.0, 60.0, 1000.0])
    assert parsed.status == status
    assert parsed.forecasts == (pytest.approx(expected) if expected else None)


@pytest.mark.parametrize("fmt", ["comma", "spaces", "lines", "percent"])
def test_answers_we_train_on_parse_back_in_every_format(fmt):
    text = answer_text((-0.257, 1.5), (1, 2), 2, fmt)
    assert parse_forecasts(text, (1, 2), [-2.0, 2.0]).forecasts == (pytest.approx(-0.26), pytest.approx(1.5))
    history = render_history([1.0, -2.5, 3.25], 2, fmt)
    assert ("t: 3.25" in history) == (fmt == "lines") and ("%" in history) == (fmt == "percent")


# --- panels --------------------------------------------------------------------------------------

def test_panel_queries_are_consecutive_origins_with_observed_outcomes():
    spec = PanelSpec(rhos=(0.3,), series_per_rho=2, history=6, origins=3, seed=4)
    queries = panel_queries(spec)
    assert len(queries) == 6 and len({q.id for q in queries}) == 6
    first = [q for q in queries if q.series.id == queries[0].series.id]
    assert [q.origin for q in first] == [5, 6, 7]
    for q in first:
        assert len(q.history) == 6 and q.history[-1] == q.series.values[q.origin]
        assert q.realised() == (q.series.values[q.origin + 1], q.series.values[q.origin + 2])
    assert first[-1].origin + 2 == len(first[-1].series.values) - 1


def test_out_of_sample_panels_hold_out_what_the_issue_asks():
    assert held_out_axes(TRAIN_PANELS, SPLITS["in-sample"]) == {
        "rho": False, "scale": False, "format": False, "horizons": False}
    assert held_out_axes(TRAIN_PANELS, SPLITS["out-of-sample"]) == {
        "rho": True, "scale": True, "format": True, "horizons": False}
    assert all(held_out_axes(TRAIN_PANELS, SPLITS["horizon-out-of-sample"]).values())
    assert held_out_axes(TRAIN_PANELS, SPLITS["rho-out-of-sample"]) == {
        "rho": True, "scale": False, "format": False, "horizons": False}


@pytest.mark.parametrize("text, field", [
    ("rhos: [1.2]\n", "rhos"),
    ("horizons: [1, 3]\n", None),
    ("series_per_rho: 0\n", "series_per_rho"),
    ("colour: red\n", "colour"),
    ("format: roman\n", "format"),
])
def test_bad_panel_spec_fails_in_one_line_naming_the_key(tmp_path, text, field):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_panel_spec(path)
    assert info.value.field == field and str(path) in str(info.value) and "\n" not in str(info.value)


def test_audit_panel_needs_two_origins_but_training_panels_may_have_one(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"rhos": [0.5], "series_per_rho": 3, "origins": 1}))
    with pytest.raises(InputError) as info:
        load_panel(path)
    assert info.value.field == "origins" and "at least 2" in str(info.value)
    single = PanelSpec(rhos=(0.5,), series_per_rho=3, origins=1, seed=3)
    assert len({q.series.id for q in panel_queries(single)}) == len(panel_queries(single)) == 3


def test_unknown_split_is_named():
    with pytest.raises(InputError, match="unknown split 'nope'"):
        load_panel("split:nope")


# --- regressions on forecasters whose bias we know ---------------------------------------------------

def _records(forecaster, spec: PanelSpec, noise: float = 0.0, seed: int = 0):
    """Records of a synthetic forecaster, written as text and parsed as a model's reply would be."""
    rng = np.random.default_rng(seed)
    records = []
    for q in panel_queries(spec):
        values = [forecaster(q, h) + noise * q.series.sigma * rng.standard_normal() for h in q.horizons]
        reply = answer_text(values, q.horizons, 4, q.fmt)
        records.append(forecast_record("extrapolation", q, reply))
    return records


BIG = PanelSpec(rhos=(0.2, 0.5, 0.8), series_per_rho=60, history=8, origins=10, scale="units", seed=11)


def _rational(q, h):
    return q.series.rational(q.origin, h)


def _naive(q, h):           # tomorrow = today: overreacts to every shock
    return q.history[-1]


def _trend(q, h):           # extrapolates the latest change
    return _rational(q, h) + 0.8 * h * (q.history[-1] - q.history[-2])


def _shrunk(q, h):          # acts as if persistence were half the truth: underreacts
    s = q.series
    return s.mu + (0.5 * s.rho) ** h * (q.history[-1] - s.mu)


def _overall(records):
    return extrapolation_metrics(records, seed=0).groups["overall"]


def test_rational_forecaster_scores_zero_on_every_bias_measure():
    m = _overall(_records(_rational, BIG))
    for name in ("cg_coefficient", "extrapolation_loading", "persistence_gap"):
        estimate = m[name]
        assert estimate.ci_low <= 0 <= estimate.ci_high and abs(estimate.value) < 0.1, name
    assert m["mse_vs_rational"].value < 1e-6 and m["parse_failure_rate"].value == 0


def test_naive_forecaster_overreacts_by_half_of_rho_minus_one():
    """F_t x_{t+1} = F_t x_{t+2} = x_t: error x_{t+1} - x_t on revision x_t - x_{t-1} has slope
    (2 gamma_1 - gamma_0 - gamma_2) / (2 gamma_0 - 2 gamma_1) = -(1 - rho) / 2."""
    table = extrapolation_metrics(_records(_naive, BIG), seed=0).groups
    assert table["overall"]["cg_coefficient"].ci_high < 0
    for rho in BIG.rhos:
        group = table[f"rho={rho:g}"]
        assert group["cg_coefficient"].value == pytest.approx((rho - 1) / 2, abs=0.08)
        assert group["implied_persistence"].value == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("forecaster", [_naive, _shrunk, "posterior"])
def test_expected_error_form_estimates_the_same_cg_coefficient_with_less_noise(forecaster):
    """Measuring the error from E[x_{t+h} | x_t] drops innovations that no forecast made at t can
    see: the same coefficient (within sampling error), a narrower interval."""
    if forecaster == "posterior":
        forecaster = lambda q, h: posterior_forecasts(q.history, (h,))[0]  # noqa: E731
    table = extrapolation_metrics(_records(forecaster, BIG), seed=0).groups
    for group in ("overall", *(f"rho={rho:g}" for rho in BIG.rhos)):
        realised, expected = table[group]["cg_coefficient"], table[group]["cg_coefficient_expected"]
        assert realised.ci_low <= expected.value <= realised.ci_high, group
        assert expected.ci_high - expected.ci_low < 0.7 * (realised.ci_high - realised.ci_low), group


def test_trend_follower_has_positive_extrapolation_loading():
    m = _overall(_records(_trend, BIG))
    assert m["extrapolation_loading"].value == pytest.approx(0.8, abs=0.05)
    assert m["cg_coefficient"].ci_high < 0


def test_underreaction_gives_positive_cg_and_low_implied_persistence():
    table = extrapolation_metrics(_records(_shrunk, BIG), seed=0).groups
    assert table["overall"]["cg_coefficient"].ci_low > 0
    assert table["overall"]["persistence_gap"].ci_high < 0
    assert table["rho=0.8"]["implied_persistence"].value == pytest.approx(0.4, abs=0.05)


def test_noisy_rational_forecasts_look_like_overreaction():
    """Independent noise in forecasts enters the revision and, negated, the error: documented."""
    m = _overall(_records(_rational, BIG, noise=0.5))
    assert m["cg_coefficient"].ci_high < 0


def test_forecaster_that_knows_only_the_history_is_rational_by_the_cg_measure():
    """The posterior mean given the history (the default training target) does not know the true
    process, so it is far from the true-process forecast, yet its error is orthogonal to its revision."""
    m = _overall(_records(lambda q, h: posterior_forecasts(q.history, (h,))[0], BIG))
    assert m["cg_coefficient"].ci_low <= 0 <= m["cg_coefficient"].ci_high
    assert abs(m["cg_coefficient"].value) < 0.1
    assert m["mse_vs_rational"].ci_low > 0.1
    noisy = _overall(_records(_rational, BIG, noise=0.5))      # about as far from the truth, but noise
    assert noisy["cg_coefficient"].ci_high < 0


def test_posterior_target_is_rational_on_a_grid_that_reaches_a_near_unit_root():
    """Conditioning on the first value instead of using the stationary likelihood shrinks rho 0.95
    toward the middle: that earlier target scored about +0.09 here (benchmarks/cg_sampling_noise.py)."""
    grid = PanelSpec(rhos=(0.0, 0.2, 0.4, 0.6, 0.8, 0.95), series_per_rho=40, seed=12)
    m = _overall(_records(lambda q, h: posterior_forecasts(q.history, (h,))[0], grid))
    assert abs(m["cg_coefficient_expected"].value) < 0.04
    assert m["cg_coefficient_expected"].ci_low <= 0 <= m["cg_coefficient_expected"].ci_high


def test_unparsed_replies_are_counted_and_break_only_their_pairs():
    spec = PanelSpec(rhos=(0.5,), series_per_rho=3, history=6, origins=4, seed=2)
    records = []
    for i, q in enumerate(panel_queries(spec)):
        reply = "no idea" if i == 1 else answer_text(q.rational(), q.horizons, 3, q.fmt)
        records.append(forecast_record("extrapolation", q, reply))
    m = _overall(records)
    assert m["parse_failure_rate"].value == pytest.approx(1 / 12)
    assert m["cg_coefficient"].n == 3 * 3 - 2   # the failed origin loses its own pair and the next one
    assert records[1]["scores"]["parse"] == "no-number" and records[1]["outcome"]["parsed"] == 0


# --- user series -----------------------------------------------------------------------------------

def _write_series(path, rows):
    path.write_text("series_id,time,value\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return path


def test_user_series_csv_gets_a_fitted_ar1(tmp_path):
    s = simulate_series(0.7, scale="tens", length=400, seed=3, index=0)
    rows = [("a", t, v) for t, v in enumerate(s.values)][::-1]          # any row order
    series = read_series_csv(_write_series(tmp_path / "s.csv", rows), min_length=30)
    assert len(series) == 1 and series[0].values == s.values and series[0].source == "fitted"
    assert series[0].rho == pytest.approx(0.7, abs=0.1) and series[0].decimals == 1


@pytest.mark.parametrize("rows, row, field, text", [
    ([("a", 1, "x")], 2, "value", "not a number"),
    ([("a", 1, 1), ("a", 1, 2)], 3, "time", "twice"),
    ([("a", 1, 1), ("a", 2, 2)], 3, "series_id", "at least 5"),
    ([("", 1, 1)], 2, "series_id", "empty"),
])
def test_bad_series_csv_names_file_row_and_field(tmp_path, rows, row, field, text):
    path = _write_series(tmp_path / "s.csv", rows)
    with pytest.raises(InputError) as info:
        read_series_csv(path, min_length=5)
    assert (info.value.row, info.value.field) == (row, field) and text in str(info.value)


# --- the audit on a tiny model -----------------------------------------------------------------------

SMALL = {"rhos": [0.0, 0.6], "series_per_rho": 2, "history": 6, "origins": 3, "seed": 9}


def test_audit_keeps_every_reply_and_reports_parse_reasons(tiny_loaded, tmp_path):
    from fairtune.runner import run_audit

    spec = tmp_path / "panel.json"
    spec.write_text(json.dumps(SMALL))
    run = run_audit("extrapolation", model=tiny_loaded, data=spec, out=tmp_path / "run", max_new_tokens=6,
                    system_prompt="Be rational.")
    records = run.records
    assert len(records) == 2 * 2 * 3 and {r["group"] for r in records} == {"rho=0", "rho=0.6"}
    details = run.summary["details"]
    assert sum(details["parse_status"].values()) == len(records)
    assert details["system_prompt"] == "Be rational." and details["reply_prefill"] == "t+1:"
    assert all(r["scores"]["response"].startswith("t+1:") for r in records)
    assert run.summary["metrics"]["overall"]["parse_failure_rate"]["n"] == len(records)


def test_system_prompt_is_refused_by_audits_that_ignore_it(tiny_loaded):
    from fairtune.runner import run_audit

    with pytest.raises(FairtuneError, match="--system-prompt is not supported"):
        run_audit("refusal", model=tiny_loaded, system_prompt="Be safe.")


def test_system_prompt_reaches_the_model(tiny_loaded, monkeypatch):
    from fairtune.engine.generation import GenerationEngine
    from fairtune.runner import run_audit

    seen = {}
    original = GenerationEngine.generate

    def spy(self, prompts, **kwargs):
        seen.update(kwargs)
        return original(self, prompts, **kwargs)

    monkeypatch.setattr(GenerationEngine, "generate", spy)
    run_audit("extrapolation", model=tiny_loaded, data="split:returns", max_new_tokens=2, system_prompt="S")
    assert seen["system"] == "S" and seen["prefill"] == "t+1:"


# --- rational training data ------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["posterior", "process"])
def test_rational_records_answer_with_the_chosen_rational_forecast(target):
    from fairtune.forecasting.dataset import rational_records

    spec = PanelSpec(rhos=(0.4,), series_per_rho=2, history=5, origins=2, scale="units", seed=5)
    records = rational_records([spec], target)
    for record, q in zip(records, panel_queries(spec)):
        user, assistant = record["messages"]
        assert user["content"] == q.prompt() and record["meta"]["group"] == q.series.id
        assert record["meta"]["attributes"]["target"] == target
        parsed = parse_forecasts(assistant["content"], q.horizons, q.history).forecasts
        wanted = posterior_forecasts(q.history, q.horizons) if target == "posterior" else q.rational()
        assert parsed == pytest.approx(wanted, abs=0.006)   # rounded as shown: 2 decimals
    assert rational_records([spec])[0]["meta"]["attributes"]["target"] == "posterior"   # the default


def test_cli_unknown_forecast_target_exits_2_naming_the_field_and_writes_nothing(tmp_path):
    out = tmp_path / "data"
    result = _cli(["data", "forecasts", "--target", "oracle", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "field 'target'" in lines[0] and "posterior" in lines[0]
    assert not out.exists()


def test_training_on_an_evaluation_panel_is_caught(tmp_path):
    from fairtune.curation import api
    from fairtune.curation.build import ContaminationError

    leak = tmp_path / "leak.json"
    leak.write_text(json.dumps(SPLITS["out-of-sample"].model_dump(mode="json")))
    with pytest.raises(ContaminationError):
        api.forecasts(out=tmp_path / "out", spec_file=leak)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["contamination.json"]


def test_builtin_training_data_is_clean_and_carded(tmp_path):
    from fairtune.curation import api

    result = api.forecasts(out=tmp_path / "data")
    card = json.loads((tmp_path / "data" / "data_card.json").read_text())
    assert result.card["steps"]["built"] == sum(len(panel_queries(p)) for p in TRAIN_PANELS)
    assert "rational-forecasts" in json.dumps(card)


# --- the recipe, end to end on a tiny model ------------------------------------------------------------

def _tiny_recipe(tiny_dir, **train):
    from fairtune.recipes.extrapolation import ExtrapolationRecipe, TrainSettings

    panel = PanelSpec(rhos=(0.3,), series_per_rho=2, history=5, origins=2, seed=21)
    evaluation = PanelSpec(rhos=(0.0, 0.6), series_per_rho=2, history=5, origins=3, scale="hundreds",
                           format="lines", seed=22)
    return ExtrapolationRecipe(model=str(tiny_dir), train_panels=(panel,),
                               evaluations={"in-sample": panel.model_copy(update={"seed": 23}),
                                            "out-of-sample": evaluation},
                               train=TrainSettings(epochs=1, batch_tokens=256, **train), max_new_tokens=8)


def test_recipe_runs_every_stage_then_resumes_from_its_cache(tiny_dir, tmp_path, monkeypatch):
    from fairtune.recipes.extrapolation import PLOT_FILE, run_extrapolation

    lines: list[str] = []
    result = run_extrapolation(_tiny_recipe(tiny_dir), out=tmp_path / "r", log=lines.append)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert set(summary["splits"]) == {"in-sample", "out-of-sample"}
    oos = summary["splits"]["out-of-sample"]
    assert oos["held_out"] == {"rho": True, "scale": True, "format": True, "horizons": False}
    assert set(oos["arms"]) == {"base", "prompt", "tuned"}
    prompt_run = json.loads((tmp_path / "r" / "audit-prompt-out-of-sample" / "summary.json").read_text())
    assert prompt_run["details"]["system_prompt"] == summary["recipe"]["system_prompt"]
    assert (tmp_path / "r" / PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    markdown = (tmp_path / "r" / "summary.md").read_text()
    assert "| cg_coefficient |" in markdown and "| cg_coefficient_expected |" in markdown
    assert summary["target"]["metric"] == "cg_coefficient_expected"
    audit_summary = json.loads((tmp_path / "r" / "audit-tuned-out-of-sample" / "summary.json").read_text())
    assert oos["arms"]["tuned"] == audit_summary["metrics"]     # derived from the same records
    assert not list((tmp_path / "r").glob(".*partial"))

    # A stage cached by an older version, whose summary lacks a measure, still reports it: the
    # recipe derives its figures from the records.
    audit_summary["metrics"]["overall"].pop("cg_coefficient_expected")
    (tmp_path / "r" / "audit-tuned-out-of-sample" / "summary.json").write_text(json.dumps(audit_summary))
    lines.clear()
    again = run_extrapolation(_tiny_recipe(tiny_dir), out=tmp_path / "r", log=lines.append)
    assert lines and all(line.endswith("cached") for line in lines)
    assert again.summary == result.summary

    lines.clear()
    run_extrapolation(_tiny_recipe(tiny_dir, lr=5e-4), out=tmp_path / "r", log=lines.append)
    rerun = {line.split(":")[0] for line in lines if line.endswith("running")}
    assert rerun == {"train", "audit-tuned-in-sample", "audit-tuned-out-of-sample"}

    lines.clear()
    other_target = _tiny_recipe(tiny_dir, lr=5e-4).model_copy(update={"target": "process"})
    run_extrapolation(other_target, out=tmp_path / "r", log=lines.append)
    rerun = {line.split(":")[0] for line in lines if line.endswith("running")}
    assert rerun == {"data", "train", "audit-tuned-in-sample", "audit-tuned-out-of-sample"}
    answer = json.loads((tmp_path / "r" / "data" / "train.jsonl").read_text().splitlines()[0])
    assert answer["meta"]["attributes"]["target"] == "process"

    # A new model of the answer (as when the posterior stopped conditioning on the first value)
    # rebuilds data cached under the old one, in this recipe and in `fairtune run` recipes alike.
    from fairtune.curation.api import content_key
    from fairtune.forecasting import dataset

    before = content_key("forecasts", {})
    monkeypatch.setitem(dataset.TARGET_MODELS, "posterior", "a later model of the posterior")
    assert content_key("forecasts", {}) != before and content_key("templates", {"axis": "gender"}) is None
    lines.clear()
    run_extrapolation(_tiny_recipe(tiny_dir, lr=5e-4), out=tmp_path / "r", log=lines.append)
    rerun = {line.split(":")[0] for line in lines if line.endswith("running")}
    assert rerun == {"data", "train", "audit-tuned-in-sample", "audit-tuned-out-of-sample"}


def test_recipe_reseeding_moves_every_panel():
    from fairtune.recipes.extrapolation import ExtrapolationRecipe

    recipe = ExtrapolationRecipe()
    moved = recipe.reseeded(3).with_rhos(evaluation=(0.15, 0.85))
    seeds = [p.seed for p in (*recipe.train_panels, *recipe.evaluations.values())]
    new = [p.seed for p in (*moved.train_panels, *moved.evaluations.values())]
    assert all(a != b for a, b in zip(seeds, new))
    assert moved.evaluations["out-of-sample"].rhos == moved.evaluations["rho-out-of-sample"].rhos == (0.15, 0.85)
    assert moved.evaluations["in-sample"].rhos == recipe.evaluations["in-sample"].rhos
    only = recipe.with_rhos(evaluation=(0.25,), splits=["rho-out-of-sample"])
    assert only.evaluations["rho-out-of-sample"].rhos == (0.25,)
    assert only.evaluations["out-of-sample"].rhos == recipe.evaluations["out-of-sample"].rhos


# --- command line ----------------------------------------------------------------------------------------

def _cli(args):
    from typer.testing import CliRunner

    from fairtune.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("args", [
    ["audit", "--suite", "extrapolation", "--data", "{spec}"],
    ["data", "forecasts", "--spec", "{spec}"],
])
def test_cli_bad_spec_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_dir, args):
    spec = tmp_path / "spec.yaml"
    spec.write_text("rhos: [0.5]\nhistory: 2\n")
    out = tmp_path / "out"
    result = _cli([a.replace("{spec}", str(spec)) for a in args] + ["--out", str(out)]
                  + (["--model", str(tiny_dir)] if args[0] == "audit" else []))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(spec) in lines[0] and "history" in lines[0]
    assert not out.exists()


def test_cli_audit_on_a_one_origin_panel_exits_2_naming_origins_and_writes_nothing(tmp_path, tiny_dir):
    spec = tmp_path / "spec.yaml"
    spec.write_text("rhos: [0.5]\norigins: 1\n")
    out = tmp_path / "out"
    result = _cli(["audit", "--suite", "extrapolation", "--data", str(spec), "--out", str(out),
                   "--model", str(tiny_dir)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(spec) in lines[0] and "field 'origins'" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("args, said", [(["--eval-rho", "1.5"], "rho 1.5"), (["--target", "oracle"], "target")])
def test_cli_recipe_rejects_bad_settings_before_loading_anything(tmp_path, args, said):
    out = tmp_path / "r"
    result = _cli(["extrapolation", "--out", str(out), *args, "--model", "/no/such/model"])
    assert result.exit_code == 2 and said in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_system_prompt_with_a_bundle_is_refused(tmp_path, tiny_dir):
    result = _cli(["audit", "--suite", "safety", "--system-prompt", "x", "--out", str(tmp_path / "o"),
                   "--model", str(tiny_dir)])
    assert result.exit_code == 2 and "--system-prompt" in result.stderr


def test_cli_recipe_with_unknown_model_fails_before_writing(tmp_path):
    out = tmp_path / "r"
    result = _cli(["extrapolation", "--out", str(out), "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and not out.exists()
