"""Every registered audit, the same checks: a new audit cannot skip them.

Each audit runs its built-in suite on a tiny random model and must write one valid record per
item and a summary whose metrics all carry n and an interval.
"""

import json

import pytest

from fairtune.audits import AUDITS, AuditOptions, bundle_members, bundle_names
from fairtune.io import read_jsonl
from fairtune.runner import run_audit, run_bundle

RECORD_KEYS = {"suite", "id", "group", "inputs", "scores", "outcome"}
ESTIMATE_KEYS = {"value", "ci_low", "ci_high", "n", "confidence"}


@pytest.mark.parametrize("name", sorted(AUDITS))
def test_audit_metadata(name):
    cls = AUDITS[name]
    assert cls.name == name and cls.description and cls.data_format and cls.headline_metrics
    assert all(b != "all" for b in cls.bundles)


@pytest.mark.parametrize("name", sorted(AUDITS))
def test_audit_runs_builtin_suite_and_writes_valid_artefacts(name, tiny_loaded, tmp_path):
    out = tmp_path / "run"
    run = run_audit(name, model=tiny_loaded, out=out, reference=tiny_loaded, max_new_tokens=8)
    records = read_jsonl(out / "records.jsonl")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert records and len(records) == summary["n_items"] == len(run.records)
    assert len({r["id"] for r in records}) == len(records), "ids must be unique to pair runs"
    for record in records:
        assert RECORD_KEYS <= set(record) and record["suite"] == name
    overall = summary["metrics"]["overall"]
    for metric in AUDITS[name].headline_metrics:
        assert metric in overall, f"headline metric {metric} missing"
    for gap, accuracy in AUDITS[name].bias_gaps.items():   # declared gaps and accuracies are reported
        assert gap in overall and (accuracy is None or accuracy in overall), (gap, accuracy)
        assert AUDITS[name].metric_goals[gap] in (0.0, "lower"), gap
    with_interval = 0
    for group, metrics in summary["metrics"].items():
        for metric, estimate in metrics.items():
            assert set(estimate) == ESTIMATE_KEYS, (group, metric)
            with_interval += estimate["ci_low"] is not None
    assert with_interval > 0, "no metric has an interval"
    assert isinstance(summary["n_skipped"], int) and summary["seed"] == 0
    # Metrics are a function of the records alone: comparisons and reports recompute them.
    recomputed = json.loads(json.dumps(AUDITS[name]().metrics(records, seed=0).as_dict()))
    assert recomputed == summary["metrics"]
    from fairtune.stats import point_estimates

    with point_estimates():
        points = AUDITS[name]().metrics(records, seed=0).as_dict()
    for group, metrics in points.items():
        for metric, estimate in metrics.items():
            assert estimate["value"] == summary["metrics"][group][metric]["value"], (group, metric)


@pytest.mark.parametrize("bundle", sorted(set(bundle_names()) - {"all"}))
def test_bundles_keep_only_their_items(bundle, tiny_loaded, tmp_path):
    out = tmp_path / "bundle"
    result = run_bundle(bundle, model=tiny_loaded, out=out, reference=tiny_loaded, max_new_tokens=8)
    index = json.loads((out / "bundle.json").read_text(encoding="utf-8"))
    assert set(index["audits"]) == set(result.runs) and set(result.runs) <= set(bundle_members(bundle))
    for name, run in result.runs.items():
        audit = AUDITS[name]()
        items = audit.load(None, AuditOptions()).items
        kept = audit.subset(audit.load(None, AuditOptions()), bundle).items
        assert len(kept) <= len(items) and (out / name / "records.jsonl").is_file()
        assert run.summary["bundle"] == bundle


@pytest.mark.parametrize("name", sorted(AUDITS))
def test_bad_data_file_fails_in_one_line_and_writes_nothing(name, tiny_dir, tmp_path):
    """Through the CLI, for every audit: a file that is not UTF-8 exits 2 with one line naming the
    file, before any model loads, and the run directory is never created."""
    from typer.testing import CliRunner

    from fairtune.cli import app

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9"}\n')
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["audit", "--suite", name, "--model", str(tiny_dir), "--data", str(bad),
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(bad) in lines[0], result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_reference_naming_the_audited_model_is_not_loaded_twice(tiny_dir, monkeypatch):
    from fairtune import runner

    calls = []
    original = runner.load_model
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: calls.append(a) or original(*a, **k))
    run = run_audit("capability", model=str(tiny_dir), reference=str(tiny_dir), max_new_tokens=4)
    assert len(calls) == 1
    assert run.summary["reference_model"]["fingerprint"] == run.summary["model"]["fingerprint"]


def test_inherited_metric_declarations_cannot_be_written_into():
    from fairtune.audits.base import Audit

    class Partial(Audit):   # declares none of the mappings, so it sees the base class's
        name = "partial"

    for declaration in ("metric_goals", "binary_outcomes", "bias_gaps"):
        with pytest.raises(TypeError):
            getattr(Partial, declaration)["x"] = "lower"
        assert "x" not in getattr(Audit, declaration)
