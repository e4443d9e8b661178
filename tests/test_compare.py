"""``fairtune compare``: paired deltas, intervals, tests, Holm, gates and the command line.

Most tests compare synthetic run directories whose differences are known by construction:
records are built with the audits' own record functions (``safety_record``, ``pair_outcome``),
known outcomes are flipped, and each summary is recomputed by the audit's ``metrics``. The
metadata contract and one real pair run the audits on the tiny random model.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from fairtune.audits import AUDITS, AuditOptions, get_audit
from fairtune.audits.refusal import safety_record
from fairtune.audits.stereotype_pairs import pair_outcome
from fairtune.cli import app
from fairtune.compare import compare_audit, compare_runs, read_runs, write_comparison
from fairtune.compare.gates import evaluate_gates, load_gates
from fairtune.compare.paired import _PairedResampler, improvement
from fairtune.errors import InputError
from fairtune.io import read_jsonl, write_json, write_jsonl
from fairtune.judges.refusal import COMPLIANCE, REFUSAL
from fairtune.runner import run_audit
from fairtune.stats import point_estimates

cli = CliRunner()

# Headline metrics with no direction to improve in; each needs a reason. Empty: every headline has a goal.
HEADLINES_WITHOUT_GOAL: dict[str, dict[str, str]] = {}


# --- synthetic runs ------------------------------------------------------------------------------

def write_run(path, suite, records):
    """A run directory as the runner writes it, the summary computed by the audit from the records."""
    audit = get_audit(suite)
    write_jsonl(path / "records.jsonl", records)
    write_json(path / "summary.json", {"suite": suite, "metrics": audit.metrics(records, seed=0).as_dict(),
                                       "headline_metrics": list(audit.headline_metrics),
                                       "n_items": len(records), "model": None, "seed": 0})
    return path


def safety_records(suite, items, labels, group):
    """Records of ``suite`` (refusal-shaped) whose verdict for item i is ``labels[i]``."""
    return [safety_record(suite, item, {"response": "...", "n_new_tokens": 3, "finish_reason": "stop", "label": label,
                                        "judges": {"keyword": label, "prefix": label}}, group(item))
            for item, label in zip(items, labels)]


def refusal_labels(n, n_comply, seed=1):
    labels = [REFUSAL] * n
    for i in random.Random(seed).sample(range(n), n_comply):
        labels[i] = COMPLIANCE
    return labels


def flip(labels, k, seed=2):
    """``k`` of the refusals turned into compliance, chosen at random."""
    out = list(labels)
    for i in random.Random(seed).sample([i for i, label in enumerate(out) if label == REFUSAL], k):
        out[i] = COMPLIANCE
    return out


@pytest.fixture(scope="module")
def refusal_items():
    return get_audit("refusal").load(None, AuditOptions()).items


@pytest.fixture(scope="module")
def refusal_runs(refusal_items, tmp_path_factory):
    """Run ``a`` (10 of 130 requests complied with), its exact copy, and runs where 2 and 30 of
    a's refusals turned into compliance."""
    root = tmp_path_factory.mktemp("refusal-runs")
    base = refusal_labels(len(refusal_items), 10)
    runs = {}
    for name, labels in (("a", base), ("copy", base), ("flip2", flip(base, 2)), ("flip30", flip(base, 30))):
        (root / name).mkdir()
        runs[name] = write_run(root / name, "refusal", safety_records("refusal", refusal_items, labels,
                                                                       lambda item: item.category))
    runs["labels"] = base
    return runs


def overall(comparison, audit, metric):
    return comparison.audits[audit].row(metric)


# --- the metadata contract -----------------------------------------------------------------------

_BUILTIN_RUNS: dict[str, list[dict]] = {}


def builtin_records(name, tiny_loaded):
    if name not in _BUILTIN_RUNS:
        _BUILTIN_RUNS[name] = run_audit(name, model=tiny_loaded, max_new_tokens=4, reference=tiny_loaded).records
    return _BUILTIN_RUNS[name]


@pytest.mark.parametrize("name", sorted(AUDITS))
def test_goals_and_binary_outcomes_name_metrics_the_audit_reports(name, tiny_loaded):
    cls = AUDITS[name]
    records = builtin_records(name, tiny_loaded)
    audit = cls()
    table = audit.metrics(records, seed=0).groups
    reported = {metric for metrics in table.values() for metric in metrics}
    assert set(cls.metric_goals) <= reported, set(cls.metric_goals) - reported
    assert set(cls.binary_outcomes) <= reported, set(cls.binary_outcomes) - reported
    for metric, goal in cls.metric_goals.items():
        assert goal in ("higher", "lower") or (isinstance(goal, (int, float)) and not isinstance(goal, bool)), metric
    missing = set(cls.headline_metrics) - set(cls.metric_goals) - set(HEADLINES_WITHOUT_GOAL.get(name, {}))
    assert not missing, f"headline metrics without a goal: {missing}"
    # A binary metric is the mean of its 0/1 field over the records it covers: each record alone
    # scores its field (or does not count), and in every group the value is the mean of those.
    with point_estimates():
        alone = [audit.metrics([record], seed=0).groups for record in records]
    for metric, field in cls.binary_outcomes.items():
        for group, metrics in table.items():
            if metric not in metrics:
                continue
            singles = []
            for record, groups in zip(records, alone):
                estimate = groups.get(group, {}).get(metric)
                if estimate is not None and estimate.value is not None:
                    assert estimate.value == float(record["outcome"][field]) and estimate.value in (0.0, 1.0)
                    singles.append(estimate.value)
            value = metrics[metric].value
            assert (value is None and not singles) or value == pytest.approx(sum(singles) / len(singles)), \
                (metric, group)


# --- the statistics ------------------------------------------------------------------------------

def test_identical_runs_change_nothing(refusal_runs):
    comparison = compare_runs(refusal_runs["a"], refusal_runs["copy"], groups=True)
    rows = comparison.audits["refusal"].metrics
    assert len(rows) > 20 and comparison.regressions == [] and comparison.passed
    for row in rows:
        if row.a is not None:
            assert row.delta == 0 and row.ci_low == row.ci_high == 0 and row.p_holm >= 0.05
            assert row.change in ("unchanged", "unknown")


def test_thirty_flips_are_a_significant_regression(refusal_runs):
    comparison = compare_runs(refusal_runs["a"], refusal_runs["flip30"])
    n = len(refusal_runs["labels"])
    refusals = refusal_runs["labels"].count(REFUSAL)
    row = overall(comparison, "refusal", "refusal_rate")
    assert row.a == pytest.approx(refusals / n) and row.b == pytest.approx((refusals - 30) / n)
    assert row.delta == pytest.approx(-30 / n) and row.ci_low <= row.delta <= row.ci_high < 0
    assert row.test == "mcnemar" and row.p_value < 0.001 and row.change == "regressed"
    asr = overall(comparison, "refusal", "attack_success_rate")
    assert asr.delta == pytest.approx(30 / n) and asr.change == "regressed"   # goal "lower": a rise regresses
    # refusal_rate_keyword is a mean of judge labels, not a declared 0/1 outcome: permutation test.
    keyword = overall(comparison, "refusal", "refusal_rate_keyword")
    assert keyword.test == "permutation" and keyword.p_value <= 2 / (1 + comparison.n_resamples)
    regressed = {(r["audit"], r["metric"]) for r in comparison.regressions}
    assert {("refusal", "refusal_rate"), ("refusal", "attack_success_rate")} <= regressed
    assert ("refusal", "empty_rate") not in regressed


def test_two_flips_are_not_significant(refusal_runs):
    row = overall(compare_runs(refusal_runs["a"], refusal_runs["flip2"]), "refusal", "refusal_rate")
    assert row.delta < 0 and row.test == "mcnemar"
    assert row.p_value == pytest.approx(0.5)   # exact McNemar: 2 discordant pairs, both one way
    assert row.change == "unchanged" and row.ci_low <= row.delta <= row.ci_high


def test_holm_is_at_least_the_raw_p_and_keeps_its_order(refusal_runs):
    comparison = compare_runs(refusal_runs["a"], refusal_runs["flip30"], groups=True)
    rows = sorted((m for m in comparison.audits["refusal"].metrics if m.p_value is not None),
                  key=lambda m: m.p_value)
    assert len(rows) > 20 and any(m.p_holm > m.p_value for m in rows)
    assert all(m.p_holm >= m.p_value for m in rows)
    assert all(x.p_holm <= y.p_holm for x, y in zip(rows, rows[1:]))


def test_same_seed_same_comparison_other_seed_other_interval(refusal_runs):
    first = compare_runs(refusal_runs["a"], refusal_runs["flip30"], seed=3, n_resamples=300).as_dict()
    again = compare_runs(refusal_runs["a"], refusal_runs["flip30"], seed=3, n_resamples=300).as_dict()
    other = compare_runs(refusal_runs["a"], refusal_runs["flip30"], seed=4, n_resamples=300).as_dict()
    assert first == again
    interval = [(m["ci_low"], m["ci_high"]) for m in first["audits"]["refusal"]["metrics"]]
    assert interval != [(m["ci_low"], m["ci_high"]) for m in other["audits"]["refusal"]["metrics"]]


def test_vectorised_and_general_paths_agree_on_means(refusal_runs):
    run_a, run_b = read_runs(refusal_runs["a"])["refusal"], read_runs(refusal_runs["flip30"])["refusal"]
    audit = get_audit("refusal")
    fast = compare_audit(audit, run_a, run_b, seed=0, n_resamples=200, groups=True)
    slow = compare_audit(audit, run_a, run_b, seed=0, n_resamples=200, groups=True, vectorise=False)
    for x, y in zip(fast.metrics, slow.metrics):
        assert (x.metric, x.group, x.test, x.a, x.b, x.delta) == (y.metric, y.group, y.test, y.a, y.b, y.delta)
        for field in ("ci_low", "ci_high", "p_value"):
            assert getattr(x, field) == pytest.approx(getattr(y, field), abs=1e-12), (x.metric, x.group, field)


def test_mean_metrics_are_vectorised_and_other_metrics_recomputed(refusal_items, tmp_path, monkeypatch):
    """refusal: only means, so metrics() is not called per draw; safety-balance's two-sided score
    (a harmonic mean of two rates) is recomputed by the audit on every draw."""
    benign = get_audit("over-refusal").load(None, AuditOptions()).items
    labels_a = refusal_labels(len(refusal_items), 10) + [COMPLIANCE] * len(benign)
    labels_b = flip(labels_a[:len(refusal_items)], 30) + labels_a[len(refusal_items):]
    items = list(refusal_items) + list(benign)

    def side(item):
        return "harmful" if item.harmful else "benign"

    for name, labels in (("a", labels_a), ("b", labels_b)):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, "safety-balance", safety_records("safety-balance", items, labels, side))
    calls = {"n": 0}
    for name in ("refusal", "safety-balance"):
        original = AUDITS[name].metrics
        monkeypatch.setattr(AUDITS[name], "metrics",
                            lambda self, records, *, seed, original=original: calls.update(n=calls["n"] + 1)
                            or original(self, records, seed=seed))
    resamples = 200
    comparison = compare_runs(tmp_path / "a", tmp_path / "b", n_resamples=resamples)
    score = overall(comparison, "safety-balance", "two_sided_score")
    assert calls["n"] >= 4 * resamples and score.test == "permutation"
    truth_a = get_audit("safety-balance").metrics(read_jsonl(tmp_path / "a" / "records.jsonl"), seed=0)
    assert score.a == pytest.approx(truth_a.groups["overall"]["two_sided_score"].value)
    assert score.ci_low <= score.delta <= score.ci_high < 0 and score.change == "regressed"
    assert overall(comparison, "safety-balance", "refusal_rate").test == "mcnemar"   # harmful side only
    n_records = len(refusal_items)
    refusal_dir = tmp_path / "refusal"
    refusal_dir.mkdir()
    write_run(refusal_dir, "refusal", safety_records("refusal", refusal_items, labels_a[:n_records],
                                                     lambda item: item.category))
    calls["n"] = 0
    compare_runs(refusal_dir, refusal_dir, n_resamples=resamples)
    assert calls["n"] < 2 * n_records + 20   # each record alone, the paired sets, a few check draws


def test_a_cluster_drawn_twice_counts_twice():
    """Extrapolation resamples whole series; a series drawn twice must add its revision pairs twice,
    not overwrite itself (the copies are renamed)."""
    from fairtune.audits.extrapolation import forecast_record
    from fairtune.forecasting.analysis import revision_pairs

    audit = get_audit("extrapolation")
    queries = audit.load(None, AuditOptions()).items
    records = [forecast_record("extrapolation", q, "t+1: {:.2f}; t+2: {:.2f}".format(*q.rational())) for q in queries]
    resampler = _PairedResampler(audit, records, records, [], seed=0, n_resamples=1, vectorise=False)
    first = int(np.flatnonzero(resampler.cluster_keys == audit.cluster(records[0]))[0])
    one = revision_pairs(resampler._resampled(0, np.array([first])))
    twice = resampler._resampled(0, np.array([first, first]))
    assert len(one) > 0 and len(revision_pairs(twice)) == 2 * len(one)
    assert len({r["id"] for r in twice}) == len(twice)


def test_unpaired_items_are_counted_and_left_out(refusal_runs, tmp_path):
    records_a = read_jsonl(refusal_runs["a"] / "records.jsonl")
    records_b = read_jsonl(refusal_runs["flip30"] / "records.jsonl")[5:]
    extra = [dict(r, id=f"new-{i}") for i, r in enumerate(records_b[:3])]
    (tmp_path / "b").mkdir()
    write_run(tmp_path / "b", "refusal", records_b + extra)
    audit = compare_runs(refusal_runs["a"], tmp_path / "b").audits["refusal"]
    assert (audit.n_paired, audit.n_only_a, audit.n_only_b) == (len(records_a) - 5, 5, 3)
    kept = {r["id"] for r in records_b}
    with point_estimates():
        expected = get_audit("refusal").metrics([r for r in records_a if r["id"] in kept], seed=0)
    assert audit.row("refusal_rate").a == pytest.approx(expected.groups["overall"]["refusal_rate"].value)


def test_bundles_pair_by_audit(refusal_runs, refusal_items, tmp_path):
    benign = get_audit("over-refusal").load(None, AuditOptions()).items
    for side, run in (("a", "a"), ("b", "flip30")):
        (tmp_path / side / "refusal").mkdir(parents=True)
        write_run(tmp_path / side / "refusal", "refusal", read_jsonl(refusal_runs[run] / "records.jsonl"))
    (tmp_path / "a" / "over-refusal").mkdir()
    write_run(tmp_path / "a" / "over-refusal", "over-refusal",
              safety_records("over-refusal", benign, [COMPLIANCE] * len(benign), lambda item: item.category))
    write_json(tmp_path / "a" / "bundle.json", {"bundle": "safety", "audits": {"refusal": {}, "over-refusal": {}}})
    write_json(tmp_path / "b" / "bundle.json", {"bundle": "safety", "audits": {"refusal": {}}})
    bundled = compare_runs(tmp_path / "a", tmp_path / "b")
    assert list(bundled.audits) == ["refusal"] and bundled.only_in_a == ["over-refusal"] and bundled.only_in_b == []
    alone = compare_runs(refusal_runs["a"], refusal_runs["flip30"])
    assert bundled.audits["refusal"].as_dict() == alone.audits["refusal"].as_dict()


def test_comparison_json_has_the_schema(refusal_runs, tmp_path):
    comparison = compare_runs(refusal_runs["a"], refusal_runs["flip30"])
    evaluate_gates(comparison, [{"audit": "refusal", "metric": "refusal_rate", "max_drop": 0.02}])
    write_comparison(comparison, tmp_path)
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert set(data) == {"run_a", "run_b", "seed", "n_resamples", "audits", "only_in_a", "only_in_b", "regressions",
                         "gates", "passed"}
    assert set(data["audits"]["refusal"]) == {"n_paired", "n_only_a", "n_only_b", "metrics"}
    assert set(data["audits"]["refusal"]["metrics"][0]) == {"metric", "group", "a", "b", "delta", "ci_low", "ci_high",
                                                           "test", "p_value", "p_holm", "goal", "change"}
    assert set(data["regressions"][0]) == {"audit", "metric", "group", "delta"}
    assert set(data["gates"][0]) == {"audit", "metric", "rule", "threshold", "observed", "passed", "message"}
    assert data["passed"] is False and r"refusal\_rate" in (tmp_path / "comparison.md").read_text()


# --- gates ---------------------------------------------------------------------------------------

def test_gate_rules(refusal_runs):
    comparison = compare_runs(refusal_runs["a"], refusal_runs["flip30"])
    n = len(refusal_runs["labels"])
    results = evaluate_gates(comparison, [
        {"audit": "refusal", "metric": "refusal_rate", "max_drop": 0.02},
        {"audit": "refusal", "metric": "refusal_rate", "max_drop": 0.3},
        {"audit": "refusal", "metric": "attack_success_rate", "max_rise": 0.3},
        {"audit": "refusal", "metric": "attack_success_rate", "max_rise_pct": 3},
        {"audit": "refusal", "metric": "refusal_rate", "min_improvement": 0.02},
        {"audit": "refusal", "metric": "refusal_rate", "no_regression": True},
        {"audit": "refusal", "metric": "empty_rate", "no_regression": True},
        {"audit": "refusal", "metric": "refusal_rate", "group": "cyber", "max_drop": 0.5},
        {"audit": "refusal", "metric": "refusal_rat", "max_drop": 0.5},
        {"audit": "toxicity", "metric": "mean_toxicity", "max_rise": 0.1},
    ])
    assert [r.passed for r in results] == [False, True, True, False, False, False, True, False, False, False]
    assert results[0].observed == pytest.approx(30 / n) and results[0].rule == "max_drop"
    assert results[4].observed == pytest.approx(-30 / n)
    assert "not compared" in results[7].message and "--groups" in results[7].message
    assert "refusal_rat" in results[8].message and "not compared" in results[8].message
    assert "toxicity" in results[9].message and "neither run" in results[9].message
    assert not comparison.passed and comparison.as_dict()["passed"] is False


def test_min_improvement_towards_a_numeric_goal(tmp_path):
    """pct_stereotype's goal is 0.5: moving from 0.7 to 0.55 of pairs is an improvement of 0.15."""
    items = get_audit("stereotype-pairs").load(None, AuditOptions()).items[:100]

    def records(n_stereotyped):
        out = []
        for i, pair in enumerate(items):
            more, less = (-10.0, -12.0) if i < n_stereotyped else (-12.0, -10.0)
            out.append({"suite": "stereotype-pairs", "id": pair.id, "group": pair.bias_type, "inputs": {},
                        "scores": {}, "outcome": pair_outcome(more, less, more / 5, less / 5)})
        return out

    for name, k in (("a", 70), ("b", 55)):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, "stereotype-pairs", records(k))
    comparison = compare_runs(tmp_path / "a", tmp_path / "b")
    results = evaluate_gates(comparison, [
        {"audit": "stereotype-pairs", "metric": "pct_stereotype", "min_improvement": 0.1},
        {"audit": "stereotype-pairs", "metric": "pct_stereotype", "min_improvement": 0.2},
        {"audit": "stereotype-pairs", "metric": "likelihood_diff", "min_improvement": 0.0},
    ])
    assert results[0].observed == pytest.approx(0.15) and [r.passed for r in results] == [True, False, False]
    assert "no goal" in results[2].message
    assert overall(comparison, "stereotype-pairs", "pct_stereotype").change == "improved"
    assert improvement(0.5, 0.3, 0.6) == pytest.approx(0.1) and improvement("lower", 2.0, 3.0) == -1.0


def test_bad_gates_name_the_key(tmp_path):
    with pytest.raises(InputError) as info:
        load_gates([{"audit": "refusal", "metric": "refusal_rate", "max_dorp": 0.1}])
    assert info.value.field == "0.max_dorp"
    with pytest.raises(InputError, match="exactly one rule"):
        load_gates([{"audit": "refusal", "metric": "refusal_rate", "max_drop": 0.1, "max_rise": 0.1}])
    with pytest.raises(InputError):
        load_gates([{"audit": "refusal", "metric": "refusal_rate", "max_drop": True}])
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n  - {audit: refusal, metric: refusal_rate, max_drop: 0.02}\n")
    assert [g.rule for g in load_gates(path)] == ["max_drop"]


# --- the command line ----------------------------------------------------------------------------

def test_cli_gate_failure_exits_1_and_says_why(refusal_runs, tmp_path):
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  - {audit: refusal, metric: refusal_rate, max_drop: 0.02}\n"
                     "  - {audit: refusal, metric: empty_rate, max_rise: 0.5}\n")
    out = tmp_path / "out"
    result = cli.invoke(app, ["compare", str(refusal_runs["a"]), str(refusal_runs["flip30"]), "--gate", str(gates),
                              "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    failed = result.stderr.strip().splitlines()
    assert len(failed) == 1 and failed[0].startswith("gate failed: refusal refusal_rate") and "max_drop" in failed[0]
    assert "regressed" in result.stdout and "refusal_rate" in result.stdout
    data = json.loads((out / "comparison.json").read_text())
    assert data["passed"] is False and [g["passed"] for g in data["gates"]] == [False, True]
    assert (out / "comparison.md").is_file()


def test_cli_real_tiny_model_runs_unchanged(tiny_loaded, tmp_path):
    """Two real runs of the same model: nothing differs and nothing is significant."""
    for name in ("a", "b"):
        run_audit("capability", model=tiny_loaded, reference=tiny_loaded, max_new_tokens=4, out=tmp_path / name)
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  - {audit: capability, metric: perplexity, max_rise_pct: 3}\n")
    result = cli.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out"),
                              "--gate", str(gates), "--resamples", "300", "--groups"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    rows = data["audits"]["capability"]["metrics"]
    assert {r["test"] for r in rows if r["a"] is not None} == {"permutation"}   # ratios of sums: recomputed
    assert all(r["delta"] == 0 and r["p_holm"] >= 0.05 for r in rows if r["a"] is not None)
    assert data["regressions"] == [] and data["passed"] is True


@pytest.mark.parametrize("case", ["missing", "not-a-run", "bad-gate", "duplicate-id", "unknown-suite", "out-is-file"])
def test_cli_bad_input_exits_2_in_one_line_and_writes_nothing(case, refusal_runs, tmp_path):
    run_a, run_b, out, args = refusal_runs["a"], refusal_runs["copy"], tmp_path / "out", []
    named = None
    if case == "missing":
        run_b = named = tmp_path / "nowhere"
    elif case == "not-a-run":
        run_b = named = tmp_path / "empty"
        run_b.mkdir()
    elif case == "bad-gate":
        named = tmp_path / "gates.yaml"
        named.write_text("gates:\n  - {audit: refusal, metric: refusal_rate, max_dorp: 0.02}\n")
        args = ["--gate", str(named)]
    elif case in ("duplicate-id", "unknown-suite"):
        run_b = tmp_path / "run"
        run_b.mkdir()
        records = read_jsonl(refusal_runs["copy"] / "records.jsonl")
        write_run(run_b, "refusal", records + records[:1] if case == "duplicate-id" else records)
        if case == "unknown-suite":
            summary = json.loads((run_b / "summary.json").read_text())
            write_json(run_b / "summary.json", summary | {"suite": "refusals"})
        named = run_b / ("records.jsonl" if case == "duplicate-id" else "summary.json")
    else:
        out = named = tmp_path / "file"
        out.write_text("x")
    result = cli.invoke(app, ["compare", str(run_a), str(run_b), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(named) in lines[0], result.stderr
    if case == "bad-gate":
        assert "max_dorp" in lines[0]
    if case == "duplicate-id":
        assert "row" in lines[0] and "'id'" in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert not out.is_dir() or not any(out.iterdir())
