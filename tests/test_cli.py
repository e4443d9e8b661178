"""The command line: exit codes, one-line errors, nothing half-written."""

import json

import pytest
from typer.testing import CliRunner

from fairtune.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_audit_writes_artefacts_and_prints_table(tiny_dir, pairs_csv, tmp_path):
    out = tmp_path / "run"
    result = invoke("audit", "--model", tiny_dir, "--data", pairs_csv, "--out", out, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "pct_stereotype" in result.stdout and "overall" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["n_items"] == 5


def test_non_empty_out_is_refused_unless_forced(tiny_dir, pairs_csv, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(invoke("audit", "--model", tiny_dir, "--data", pairs_csv, "--out", out), "--force")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    result = invoke("audit", "--model", tiny_dir, "--data", pairs_csv, "--out", out, "--force", "-q")
    assert result.exit_code == 0 and (out / "summary.json").is_file()


@pytest.mark.parametrize("content,fragments", [
    (b"sent_more,sent_less,bias_type\na,b,gender\n", ["row 1", "field 'stereo_antistereo'"]),
    (b"", ["empty file"]),
    (b"sent_more,sent_less,stereo_antistereo,bias_type\n\xff\xfe,b,stereo,gender\n",
     ["row 2", "field 'sent_more'", "UTF-8"]),
])
def test_bad_data_exits_2_and_writes_nothing(tiny_dir, tmp_path, content, fragments):
    data = tmp_path / "bad.csv"
    data.write_bytes(content)
    out = tmp_path / "run"
    result = invoke("audit", "--model", tiny_dir, "--data", data, "--out", out)
    assert_one_line_error(result, str(data), *fragments)
    assert not out.exists()


def test_unknown_suite_model_and_missing_data(tiny_dir, pairs_csv, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(invoke("audit", "--suite", "nope", "--out", out), "suite 'nope'", "stereotype-pairs")
    assert_one_line_error(invoke("audit", "--model", tmp_path / "nowhere", "--out", out), "nowhere")
    assert_one_line_error(invoke("audit", "--model", tiny_dir, "--data", tmp_path / "x.csv", "--out", out),
                          "x.csv", "no such file")
    assert_one_line_error(invoke("audit", "--model", tiny_dir, "--dtype", "int3", "--out", out), "int3")
    assert not out.exists()


def test_suites_and_version():
    listing = invoke("audits").stdout
    assert "stereotype-pairs" in listing and "bundle gender: " in listing and "bundle all: " in listing
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("fairtune ")


def test_summary_table_formats_rates_as_percent_with_intervals():
    from rich.console import Console

    from fairtune.console import summary_table

    estimate = {"value": 0.5449, "ci_low": 0.473, "ci_high": 0.6228, "n": 167, "confidence": 0.95}
    diff = {"value": 3.834, "ci_low": 3.368, "ci_high": 4.3595, "n": 167, "confidence": 0.95}
    summary = {"suite": "stereotype-pairs", "model": {"spec": "m"}, "n_items": 167, "seed": 0,
               "metrics": {"overall": {"pct_stereotype": estimate, "likelihood_diff": diff}}}
    console = Console(width=120, record=True)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "54.5 [47.3, 62.3]" in text and "3.83 [3.37, 4.36]" in text and "167" in text


def test_format_estimate_without_an_interval():
    from fairtune.console import format_estimate

    assert format_estimate("refusal_rate", {"value": 1.0, "ci_low": None, "ci_high": None}) == "1.00"
    assert format_estimate("refusal_rate", {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}) == "0.50 [0.25, 0.75]"
    assert format_estimate("pct_stereotype", {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}) == "50.0 [40.0, 60.0]"
    assert format_estimate("refusal_rate", {"value": None, "ci_low": None, "ci_high": None}) == "-"
