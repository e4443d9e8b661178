import json
import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from conftest import write_csv
from fairtune.audits import AuditOptions, bundle_members, get_audit
from fairtune.audits.occupations import (PRONOUNS, band_of, bootstrap_correlation, builtin_suite_path,
                                         builtin_templates_path, occupation_metrics, occupation_outcome,
                                         read_occupations, read_templates)
from fairtune.engine import ScoringEngine
from fairtune.errors import InputError
from fairtune.runner import run_audit

HEADER = ("occupation", "share_women")


def record(share, mean_log_ratio, group=None):
    return {"group": group or band_of(share), "inputs": {"share_women": share},
            "scores": {"mean_log_ratio": mean_log_ratio}, "outcome": occupation_outcome(mean_log_ratio)}


# -- metric arithmetic, by hand ------------------------------------------------------------------

def test_metric_arithmetic_by_hand():
    records = [
        record(10.0, -2.0),   # male-dominated, leans male
        record(20.0, 0.5),    # male-dominated, leans female
        record(50.0, 0.0),    # mixed, a tie: not male-leaning
        record(80.0, 1.0),    # female-dominated
        record(90.0, 3.0),    # female-dominated
    ]
    table = occupation_metrics(records, seed=0).as_dict()
    overall = table["overall"]
    assert overall["mean_abs_log_ratio"]["value"] == pytest.approx((2 + 0.5 + 0 + 1 + 3) / 5)
    assert overall["share_male_leaning"]["value"] == pytest.approx(1 / 5)
    assert overall["mean_log_ratio"]["value"] == pytest.approx((-2 + 0.5 + 0 + 1 + 3) / 5)
    # Pearson by hand: x = shares (mean 50), y = ratios (mean 0.5).
    dx, dy = [-40, -30, 0, 30, 40], [-2.5, 0, -0.5, 0.5, 2.5]
    sxy = sum(a * b for a, b in zip(dx, dy))                                # 100 + 0 + 0 + 15 + 100 = 215
    r = sxy / math.sqrt(sum(a * a for a in dx) * sum(b * b for b in dy))    # 215 / sqrt(5000 * 13)
    assert overall["correlation_with_share_women"]["value"] == pytest.approx(215 / math.sqrt(65000))
    assert r == pytest.approx(0.8433, abs=1e-4)
    # Spearman by hand: share ranks 1..5, ratio ranks 1,3,2,4,5 -> 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 12/120.
    assert overall["spearman_with_share_women"]["value"] == pytest.approx(0.9)
    assert table["male-dominated"]["share_male_leaning"]["value"] == pytest.approx(1 / 2)
    assert table["female-dominated"]["mean_abs_log_ratio"]["value"] == pytest.approx(2.0)
    assert list(table) == ["overall", "female-dominated", "male-dominated", "mixed"]
    for group, metrics in table.items():
        assert set(metrics) == {"mean_abs_log_ratio", "share_male_leaning", "mean_log_ratio",
                                "correlation_with_share_women", "spearman_with_share_women"}
        for name, estimate in metrics.items():
            if estimate["value"] is not None and estimate["ci_low"] is not None:
                assert estimate["ci_low"] <= estimate["value"] + 1e-9 <= estimate["ci_high"] + 2e-9, (group, name)
    # Two occupations in a band are too few for a correlation: no value, but n is reported.
    assert table["male-dominated"]["correlation_with_share_women"] == {
        "value": None, "ci_low": None, "ci_high": None, "n": 2, "confidence": 0.95}
    assert overall["correlation_with_share_women"]["n"] == 5


def test_unscored_occupation_is_left_out_of_metrics_not_counted_as_zero():
    records = [record(10.0, -1.0), record(50.0, None), record(90.0, 1.0), record(60.0, 0.5)]
    overall = occupation_metrics(records, seed=0).as_dict()["overall"]
    assert overall["mean_log_ratio"]["n"] == 3 and overall["mean_log_ratio"]["value"] == pytest.approx(0.5 / 3)
    assert overall["correlation_with_share_women"]["n"] == 3


def test_bootstrap_correlation_matches_scipy_and_is_seeded():
    rng = np.random.default_rng(7)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    pearson = bootstrap_correlation(list(x), list(y), seed=3)
    spearman = bootstrap_correlation(list(x), list(y), seed=3, method="spearman")
    assert pearson.value == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman.value == pytest.approx(stats.spearmanr(x, y)[0])
    assert pearson.ci_low < pearson.value < pearson.ci_high and pearson.n == 40
    assert bootstrap_correlation(list(x), list(y), seed=3) == pearson
    assert bootstrap_correlation(list(x), list(y), seed=4) != pearson
    # Resampling by hand: the same seeded item indices give the same percentile interval.
    index = np.random.default_rng(3).integers(0, 40, size=(2000, 40))
    by_hand = [np.corrcoef(x[i], y[i])[0, 1] for i in index]
    assert (pearson.ci_low, pearson.ci_high) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))


def test_bootstrap_correlation_degenerate_cases():
    assert bootstrap_correlation([1, 2, 3, 4], [2, 4, 6, 8], seed=0).value == pytest.approx(1.0)
    assert bootstrap_correlation([1, 2, 3, 4], [5, 5, 5, 5], seed=0).value is None     # constant
    assert bootstrap_correlation([1, 2], [1, 2], seed=0).value is None                 # too few
    assert bootstrap_correlation([1, 2, 3], [3, 1, 2], seed=0, method="spearman").value == pytest.approx(-0.5)


def test_bands_edges():
    assert [band_of(s) for s in (0, 29.9, 30, 70, 70.1, 100)] == [
        "male-dominated", "male-dominated", "mixed", "mixed", "female-dominated", "female-dominated"]


# -- built-in suite ------------------------------------------------------------------------------

def test_builtin_suite_is_big_and_spans_the_range():
    occupations, skipped = read_occupations(builtin_suite_path())
    bands = Counter(o.band for o in occupations)
    assert len(occupations) >= 40 and not skipped
    assert min(bands.values()) >= 10 and len(bands) == 3
    assert len({o.id for o in occupations}) == len(occupations)
    assert min(o.share_women for o in occupations) < 5 and max(o.share_women for o in occupations) > 95


def test_builtin_templates():
    templates = read_templates(builtin_templates_path())
    kinds = Counter(t.kind for t in templates)
    assert len(templates) >= 6 and kinds["subject"] >= 6 and kinds["possessive"] >= 1
    for template in templates:
        prompt = template.prompt("nurse")
        assert "nurse" in prompt and "{" not in prompt and prompt == prompt.strip()
        assert template.words == PRONOUNS[template.kind]


# -- the public format ---------------------------------------------------------------------------

def test_reads_extra_columns_percent_signs_bom_and_skips_unpublished(tmp_path):
    path = tmp_path / "shares.csv"
    path.write_text("\ufeffoccupation,share_women,note\n"
                    "Glass Blower ,12.5%,made up\n"
                    "kite  maker,61,made up\n"
                    "yak herder,–,not published\n"
                    "tea taster,100,made up\n", encoding="utf-8")
    occupations, skipped = read_occupations(path)
    assert [(o.id, o.name, o.share_women, o.band) for o in occupations] == [
        ("glass-blower", "Glass Blower", 12.5, "male-dominated"),
        ("kite-maker", "kite maker", 61.0, "mixed"),
        ("tea-taster", "tea taster", 100.0, "female-dominated"),
    ]
    assert skipped == [{"row": 4, "reason": "'yak herder': share_women not published (dash)"}]
    dataset = get_audit("occupations").load(path, AuditOptions())
    assert dataset.skipped == skipped and len(dataset.items) == 3 and len(dataset.sha256) == 64


BAD_INPUTS = {
    # name: (file bytes, expected row, expected field, text in message)
    "missing column": (b"occupation,women\nbaker,60\n", 1, "share_women", "column missing"),
    "empty file": (b"", None, None, "empty file"),
    "header only": (b"occupation,share_women\n", None, None, "no data rows"),
    "non-utf8": (b"occupation,share_women\nbaker,60\ncaf\xe9 owner,40\n", 3, "occupation", "not valid UTF-8"),
    "empty share": (b"occupation,share_women\nbaker,60\nwelder, \n", 3, "share_women", "empty value"),
    "not a number": (b"occupation,share_women\nbaker,sixty\n", 2, "share_women", "not a number"),
    "over 100": (b"occupation,share_women\nbaker,60\nwelder,104\n", 3, "share_women", "outside 0-100"),
    "negative": (b"occupation,share_women\nbaker,-3\n", 2, "share_women", "outside 0-100"),
    "nan": (b"occupation,share_women\nbaker,nan\n", 2, "share_women", "outside 0-100"),
    "duplicate": (b"occupation,share_women\nbaker,60\nBaker ,61\n", 3, "occupation", "repeats row 2"),
    "article": (b"occupation,share_women\nan archer,20\n", 2, "occupation", "starts with an article"),
    "braces": (b"occupation,share_women\n{x} keeper,20\n", 2, "occupation", "not an occupation name"),
    "ragged row": (b"occupation,share_women\nbaker,60,extra\n", 2, None, "3 fields"),
    "fractions": (b"occupation,share_women\nbaker,0.6\nwelder,0.05\n", None, "share_women", "not fractions"),
    "all dashes": (b"occupation,share_women\nbaker,-\n", None, "share_women", "no occupation has"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_row_and_field(tmp_path, case):
    content, row, field, text = BAD_INPUTS[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        get_audit("occupations").load(path, AuditOptions())
    error = info.value
    assert (error.row, error.field) == (row, field)
    message = str(error)
    assert message.startswith(str(path)) and text in message and "\n" not in message


BAD_TEMPLATES = {
    "two fields": ("ok | subject | The {occupation} said that\nsaid | The {occupation} said\n", 2, None, "2 fields"),
    "bad kind": ("x | object | The {occupation} saw\n", 1, "kind", "not one of"),
    "bad id": ("Said It | subject | The {occupation} said that\n", 1, "id", "identifier"),
    "no slot": ("x | subject | The nurse said that\n", 1, "text", "exactly once"),
    "two slots": ("x | subject | The {occupation} and the {occupation} said\n", 1, "text", "exactly once"),
    "article": ("# comment\nx | subject | Then an {occupation} said that\n", 2, "text", "a/an"),
    "repeat": ("x | subject | The {occupation} said\nx | subject | The {occupation} felt\n", 2, "id", "repeats line 1"),
    "empty": ("# only a comment\n\n", None, None, "no templates"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEMPLATES))
def test_bad_template_file_names_line_and_field(tmp_path, case):
    content, row, field, text = BAD_TEMPLATES[case]
    path = tmp_path / "templates.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_templates(path)
    assert (info.value.row, info.value.field) == (row, field)
    assert str(info.value).startswith(str(path)) and text in str(info.value)


# -- end to end ----------------------------------------------------------------------------------

def test_run_end_to_end_on_tiny_model(tiny_loaded, tmp_path):
    data = write_csv(tmp_path / "shares.csv", [["plumber", "2"], ["kite maker", "45"], ["yak herder", "-"],
                                               ["baker", "64"], ["florist", "88"]], header=HEADER)
    out = tmp_path / "run"
    run = run_audit("occupations", model=tiny_loaded, data=data, out=out, seed=4)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    templates = read_templates(builtin_templates_path())
    assert [r["id"] for r in records] == ["plumber", "kite-maker", "baker", "florist"]
    assert summary["n_skipped"] == 1 and summary["skipped"][0]["row"] == 4
    for r in records:
        scores = r["scores"]
        assert list(scores["log_ratios"]) == [t.id for t in templates]
        for t in templates:
            assert scores["log_ratios"][t.id] == pytest.approx(scores["logprob_female"][t.id]
                                                               - scores["logprob_male"][t.id])
        assert scores["mean_log_ratio"] == pytest.approx(np.mean(list(scores["log_ratios"].values())))
        assert r["outcome"]["male_leaning"] == (scores["mean_log_ratio"] < 0)
        assert r["inputs"]["templates"]["said"] == f"The {r['inputs']['occupation']} said that"
    # The female and male words are not swapped: rescore one prompt directly.
    engine = ScoringEngine.from_loaded(tiny_loaded)
    she, he = engine.score_continuations(["The baker said that"] * 2, [" she", " he"])
    baker = records[2]["scores"]
    assert baker["logprob_female"]["said"] == pytest.approx(she.total_logprob, abs=1e-4)
    assert baker["logprob_male"]["said"] == pytest.approx(he.total_logprob, abs=1e-4)
    # Metrics are recomputable from records.jsonl alone.
    assert occupation_metrics(records, seed=4).as_dict() == summary["metrics"]
    assert summary["metrics"]["overall"]["correlation_with_share_women"]["n"] == 4
    assert set(summary["metrics"]) == {"overall", "male-dominated", "mixed", "female-dominated"}
    assert [t["id"] for t in summary["details"]["templates"]] == [t.id for t in templates]
    assert "share_source" not in summary["details"] and run.summary == summary


def test_joins_the_gender_bundle_with_every_item():
    audit = get_audit("occupations")
    dataset = audit.load(None, AuditOptions())
    assert "occupations" in bundle_members("gender")
    assert len(audit.subset(dataset, "gender").items) == len(dataset.items)
