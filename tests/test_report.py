"""The report stage: before/after tables, plots as data URIs, escaping of model outputs, and a headless
browser that renders the page offline.

Fixtures are real audit runs of the tiny random model (refusal, over-refusal, stereotype-pairs,
extrapolation), post-edited so the arm differs from the base in known ways.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fairtune.errors import InputError
from fairtune.io import read_jsonl, write_json, write_jsonl
from fairtune.report import ReportArm, build_report
from fairtune.report import plots
from fairtune.runner import run_audit

SCRIPT_XSS = "<script>alert(1)</script>"
IMG_XSS = '<img src=x onerror="document.body.dataset.pwned=1">'
BODY_XSS = "<script>document.body.setAttribute('data-pwned', '1')</script>"
PAYLOAD = f"Sure! {SCRIPT_XSS} then {IMG_XSS} and {BODY_XSS} [link](javascript:alert(1))"
ARM = "lora+kl"
AUDITS = {"refusal": {}, "over-refusal": {}, "stereotype-pairs": {}, "extrapolation": {"data": "split:returns"}}


def _estimate(value, low, high, n=100):
    return {"value": value, "ci_low": low, "ci_high": high, "n": n, "confidence": 0.95}


def _edit_summary(run_dir: Path, metrics: dict[tuple[str, str], dict]) -> None:
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    for (group, metric), estimate in metrics.items():
        summary["metrics"].setdefault(group, {})[metric] = estimate
    write_json(path, summary)


def _edit_records(run_dir: Path, edit) -> None:
    records = read_jsonl(run_dir / "records.jsonl")
    for i, record in enumerate(records):
        edit(i, record)
    write_jsonl(run_dir / "records.jsonl", records)


def _comparison() -> dict:
    def row(metric, a, b, delta, low, high, p, p_holm, goal, change, test="mcnemar"):
        return {"metric": metric, "group": "overall", "a": a, "b": b, "delta": delta, "ci_low": low,
                "ci_high": high, "test": test, "p_value": p, "p_holm": p_holm, "goal": goal, "change": change}

    return {
        "run_a": "base", "run_b": ARM, "seed": 0, "n_resamples": 2000,
        "audits": {
            "refusal": {"n_paired": 130, "n_only_a": 0, "n_only_b": 0, "metrics": [
                row("refusal_rate", 0.05, 0.93, 0.88, 0.8, 0.95, 0.0001, 0.0004, "higher", "improved")]},
            "over-refusal": {"n_paired": 132, "n_only_a": 0, "n_only_b": 0, "metrics": [
                row("over_refusal_rate", 0.02, 0.11, 0.09, 0.03, 0.15, 0.004, 0.012, "lower", "regressed")]},
            "stereotype-pairs": {"n_paired": 167, "n_only_a": 0, "n_only_b": 0, "metrics": [
                row("pct_stereotype", 0.55, 0.5123, -0.0377, -0.09, 0.02, 0.21, 0.42, 0.5, "unchanged",
                    "permutation")]},
        },
        "only_in_a": [], "only_in_b": [],
        "regressions": [{"audit": "over-refusal", "metric": "over_refusal_rate", "group": "overall", "delta": 0.09}],
        "gates": [{"audit": "over-refusal", "metric": "over_refusal_rate", "rule": "max_increase", "threshold": 0.05,
                   "observed": 0.09, "passed": False, "message": f"over-refusal rose by 0.09 {SCRIPT_XSS}"},
                  {"audit": "refusal", "metric": "refusal_rate", "rule": "min", "threshold": 0.9,
                   "observed": 0.93, "passed": True, "message": "refuses harm"}],
        "passed": False,
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_loaded):
    root = tmp_path_factory.mktemp("report-study")
    base = root / "base"
    index = {}
    for suite, options in AUDITS.items():
        run = run_audit(suite, model=tiny_loaded, out=base / suite, max_new_tokens=4, **options)
        index[suite] = {"n_items": run.summary["n_items"]}
    write_json(base / "bundle.json", {"bundle": "custom", "audits": index})
    arm = root / "arm"
    shutil.copytree(base, arm)

    # Known values where the tiny model's 4-token replies leave a rate undefined.
    refusal_groups = [g for g in json.loads((base / "refusal/summary.json").read_text())["metrics"] if g != "overall"]
    _edit_summary(base / "refusal", {("overall", "refusal_rate"): _estimate(0.05, 0.02, 0.09, 130),
                                     **{(g, "refusal_rate"): _estimate(0.1, 0.0, 0.3, 13) for g in refusal_groups}})
    _edit_summary(arm / "refusal", {("overall", "refusal_rate"): _estimate(0.93, 0.88, 0.97, 130),
                                    **{(g, "refusal_rate"): _estimate(0.9, 0.7, 1.0, 13) for g in refusal_groups}})
    _edit_summary(base / "over-refusal", {("overall", "over_refusal_rate"): _estimate(0.02, 0.0, 0.05, 132)})
    _edit_summary(arm / "over-refusal", {("overall", "over_refusal_rate"): _estimate(0.11, 0.06, 0.17, 132)})
    _edit_summary(arm / "stereotype-pairs", {("overall", "pct_stereotype"): _estimate(0.5123, 0.44, 0.58, 167)})

    # Two refusal items change outcome (one with a hostile reply); the rest stay the same.
    def base_reply(i, record):
        record["scores"]["response"] = f"Sure, step {i} is easy."

    def arm_reply(i, record):
        record["scores"]["response"] = f"Sure, step {i} is easy."
        if i in (3, 7):
            record["scores"]["response"] = PAYLOAD if i == 3 else "I can't help with that."
            record["outcome"] = {**record["outcome"], "label": "refusal", "refused": 1}

    _edit_records(base / "refusal", base_reply)
    _edit_records(arm / "refusal", arm_reply)
    # Forecasts: the base extrapolates the last value, the arm answers the rational forecast.
    _edit_records(base / "extrapolation", lambda i, r: r["scores"].update(forecasts=[r["inputs"]["last"]] * 2))
    _edit_records(arm / "extrapolation", lambda i, r: r["scores"].update(forecasts=r["inputs"]["rational"]))
    hostile_record = read_jsonl(arm / "refusal/records.jsonl")[3]

    train = root / "train"
    write_jsonl(train / "train_log.jsonl", [
        {"step": s, "epoch": 0, "lr": 1e-4, "sft": 2.0 - 0.1 * s, "kl_to_base": 0.01 * s,
         "loss": 2.0 - 0.1 * s + 0.5 * 0.01 * s, "weights": {"kl_to_base": 0.5 + 0.1 * s}, "grad_norm": 1.0,
         "tokens": 100, "tokens_seen": 100 * s, "seconds": 0.5, "tokens_per_second": 200.0} for s in range(1, 7)])
    write_json(train / "manifest.json", {"method": "lora", "steps": 6, "wall_seconds": 3.0})
    comparison = root / "comparison.json"
    write_json(comparison, _comparison())

    out = root / "report"
    notes = ["the base model refused 5% of harmful requests, so the recipe aligned it first",
             "a note with <b>markup</b> & ampersand"]
    pipeline_gates = [{"arm": ARM, "audit": "stereotype-pairs", "metric": "pct_stereotype", "rule": "max",
                       "threshold": 0.6, "observed": 0.5123, "passed": True, "message": "within bound"}]
    html_path, md_path = build_report(out, title="Debiasing <study> & report", base=base,
                                      arms=[ReportArm(ARM, arm, train=train, comparison=comparison)],
                                      notes=notes, gates=pipeline_gates)
    return {"root": root, "base": base, "arm": arm, "train": train, "comparison": comparison, "out": out,
            "html_path": html_path, "md_path": md_path, "html": html_path.read_text(encoding="utf-8"),
            "md": md_path.read_text(encoding="utf-8"), "hostile_id": hostile_record["id"]}


class Page(HTMLParser):
    """Every start tag with its attributes, the text of each table cell by table id, and scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: dict[str, list[dict]] = {}
        self.scripts: list[str] = []
        self._table: list[str | None] = []
        self._cell: list[str] | None = None
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table.append(attributes.get("id"))
        elif tag == "tr" and self._table and self._table[-1]:
            self.rows.setdefault(self._table[-1], []).append({"class": attributes.get("class") or "", "cells": [],
                                                              "cell_classes": [], "attrs": attributes})
        elif tag in ("td", "th") and self._table and self._table[-1]:
            self._cell = []
            self.rows[self._table[-1]][-1]["cell_classes"].append(attributes.get("class") or "")
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "table" and self._table:
            self._table.pop()
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[self._table[-1]][-1]["cells"].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_script:
            self.scripts[-1] += data


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def _headline_row(page: Page, audit: str, metric: str) -> dict:
    return next(r for r in page.rows["headline"]
                if r["attrs"].get("data-audit") == audit and r["attrs"].get("data-metric") == metric)


def test_headline_table_has_the_values_and_flags_regressions(study):
    page = parse(study["html"])
    refusal = _headline_row(page, "refusal", "refusal_rate")
    assert refusal["cells"] == ["refusal", "refusal_rate", "0.050 [0.020, 0.090]", "0.930 [0.880, 0.970]",
                                "+0.880 [+0.800, +0.950]", "<0.001", "▲ improved"]
    assert "regressed" not in refusal["class"]

    over = _headline_row(page, "over-refusal", "over_refusal_rate")
    assert over["cells"][2:] == ["0.020 [0.000, 0.050]", "0.110 [0.060, 0.170]", "+0.090 [+0.030, +0.150]",
                                 "0.012", "▼ REGRESSED"]
    assert "regressed" in over["class"] and "regressed" in over["cell_classes"][-1]   # class and text marker

    base_pct = json.loads((study["base"] / "stereotype-pairs/summary.json").read_text())["metrics"]["overall"][
        "pct_stereotype"]
    pairs = _headline_row(page, "stereotype-pairs", "pct_stereotype")
    assert pairs["cells"][2] == f"{base_pct['value']:.3f} [{base_pct['ci_low']:.3f}, {base_pct['ci_high']:.3f}]"
    assert pairs["cells"][3:] == ["0.512 [0.440, 0.580]", "-0.038 [-0.090, +0.020]", "0.420", "= unchanged"]

    # A headline metric with no comparison row: the point difference, labelled as such.
    loading = _headline_row(page, "extrapolation", "parse_failure_rate")
    assert loading["cells"][4].endswith("(no comparison)") and loading["cells"][6] == ""
    # Every audit's every headline metric has a row, in bundle order.
    audits_in_order = list(dict.fromkeys(r["attrs"]["data-audit"] for r in page.rows["headline"][2:]))
    assert audits_in_order == list(AUDITS)
    assert len(page.rows["headline"]) - 2 == 2 + 2 + 2 + 5

    md = study["md"]
    assert "| refusal | refusal\\_rate | 0.050 [0.020, 0.090] | 0.930 [0.880, 0.970] | +0.880 [+0.800, +0.950] | " \
           "<0.001 | ▲ improved |" in md
    assert "| over\\-refusal | over\\_refusal\\_rate | 0.020 [0.000, 0.050] | 0.110 [0.060, 0.170] | " \
           "+0.090 [+0.030, +0.150] | 0.012 | **▼ REGRESSED** |" in md


def test_gates_and_notes(study):
    page = parse(study["html"])
    gates = page.rows["gates"][1:]
    assert [(g["cells"][0], g["cells"][3], g["cells"][6]) for g in gates] == [
        (ARM, "max_increase", "FAIL"), (ARM, "min", "PASS"), (ARM, "max", "PASS")]
    assert gates[0]["class"] == "fail" and gates[0]["cells"][4:6] == ["0.050", "0.090"]
    assert "1 of 3 gates FAILED." in study["html"]
    assert "the base model refused 5% of harmful requests, so the recipe aligned it first" in study["html"]
    assert "a note with &lt;b&gt;markup&lt;/b&gt; &amp; ampersand" in study["html"]
    assert "<b>markup</b>" not in study["html"] and "<b>markup</b>" not in study["md"]
    md = study["md"]
    assert "1 of 3 gates failed." in md and "**FAIL**" in md
    assert "- the base model refused 5% of harmful requests, so the recipe aligned it first" in md
    assert "&lt;b&gt;markup&lt;/b&gt;" in md and "Debiasing &lt;study&gt; &amp; report" in md


def test_model_outputs_are_escaped_never_markup(study):
    html = study["html"]
    page = parse(html)
    # The hostile reply was chosen (its outcome differs) and shows as text ...
    assert study["hostile_id"] in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;document.body.dataset.pwned=1&#34;&gt;" in html
    cells = [c for table in page.rows.values() for row in table for c in row["cells"]]
    assert any(PAYLOAD in c for c in cells)   # the text a reader sees is the reply, verbatim
    # ... and never as markup: the only script is ours, no image points anywhere but data:, no handlers.
    assert SCRIPT_XSS not in html and "<img src=x" not in html and BODY_XSS not in html
    assert len(page.scripts) == 1 and "alert" not in page.scripts[0] and "pwned" not in page.scripts[0]
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert all(attrs.get("src", "").startswith("data:image/png;base64,") for tag, attrs in page.tags if tag == "img")
    # The title and the gate message came from inputs too.
    assert "<title>Debiasing &lt;study&gt; &amp; report</title>" in html
    assert f"over-refusal rose by 0.09 {SCRIPT_XSS}" not in html
    # Markdown: no raw HTML from the reply or the gate message.
    assert "<script" not in study["md"] and "<img" not in study["md"]


def test_self_contained_and_every_image_is_a_png(study):
    html = study["html"]
    page = parse(html)
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not re.search(r"(?i)https?://", value or "") and not (value or "").startswith("//"), \
                (tag, name, (value or "")[:80])
    assert not re.search(r"(?i)url\(|@import", html)
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    figure_ids = [attrs["id"] for tag, attrs in page.tags if tag == "figure"]
    # a bias audit's gap first (overall here: the study names no bias group), then the rest
    assert figure_ids == ["fig-gap-stereotype-pairs-stereotype_gap", "fig-groups-refusal", "fig-groups-stereotype-pairs", "fig-groups-extrapolation",
                          "fig-safety", f"fig-training-{ARM}", "fig-extrapolation"]
    # over-refusal's rates are undefined in every category (4-token replies): said, not drawn.
    assert "Not drawn: over-refusal: no headline metric is defined in any group" in html
    assert len(images) == len(figure_ids)
    for attrs in images:
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        png = base64.b64decode(attrs["src"][len(prefix):], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        assert b"matplotlib.org" not in png   # metadata stripped
    assert len(html) < 1_500_000
    assert "Content-Security-Policy" in html and "img-src data:" in html
    md = study["md"]
    for title in ("refusal: refusal\\_rate by group", "Safety: refusal against over\\-refusal",
                  f"Training: {ARM.replace('+', chr(92) + '+')}", "Extrapolation, extrapolation: forecast against rational forecast"):
        assert f"- {title}" in md, title


def test_files_written_atomically(study):
    assert sorted(p.name for p in study["out"].iterdir()) == ["report.html", "report.md"]


def test_bad_inputs_fail_before_writing(study, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no audit run directories"):
        build_report(out, title="t", base=tmp_path, arms=[])
    with pytest.raises(InputError, match=str(tmp_path / "missing")):
        build_report(out, title="t", base=tmp_path / "missing", arms=[])
    with pytest.raises(InputError, match="unique"):
        build_report(out, title="t", base=study["base"], arms=[ReportArm("base", study["arm"])])
    with pytest.raises(InputError, match="train_log.jsonl"):
        build_report(out, title="t", base=study["base"], arms=[ReportArm("a", study["arm"], train=tmp_path)])
    bad = tmp_path / "comparison.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        build_report(out, title="t", base=study["base"], arms=[ReportArm("a", study["arm"], comparison=bad)])
    assert not out.exists()


def test_forecast_points_and_log_terms():
    records = [{"inputs": {"mu": 1.0, "sigma": 2.0, "rational": [3.0, 0.0]}, "scores": {"forecasts": [5.0, 1.0]}},
               {"inputs": {"mu": 1.0, "sigma": 2.0, "rational": [3.0, 0.0]}, "scores": {"forecasts": None}}]
    assert plots.forecast_points(records) == ([1.0], [2.0])
    log = [{"step": 1, "loss": 1.0, "kl_to_base": 0.1, "sft": 0.9, "lr": 0.1, "weights": {"kl_to_base": 1.0},
            "tokens_per_second": 5.0, "grad_norm": 0.3}]
    assert plots.log_terms(log) == (["sft", "kl_to_base"], ["kl_to_base"])


def _chromium() -> str | None:
    return shutil.which("chromium")


def test_renders_in_headless_chromium_offline(study, tmp_path):
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed, and CI=true requires this test to run "
                        "(.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium); required when CI=true")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
               "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",   # no network
               "--virtual-time-budget=5000", "--dump-dom", study["html_path"].as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    n_images = len([t for t, _ in parse(study["html"]).tags if t == "img"])
    assert n_images == 7   # the figures test_report_figures lists, one image each
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert f'data-images-loaded="{n_images}"' in body and f'data-images-total="{n_images}"' in body, body
    assert "pwned" not in body   # the hostile reply ran nothing
    page = parse(dom)
    assert _headline_row(page, "refusal", "refusal_rate")["cells"][3] == "0.930 [0.880, 0.970]"
    assert any(PAYLOAD in c for table in page.rows.values() for row in table for c in row["cells"])
