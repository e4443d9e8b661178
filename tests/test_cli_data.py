"""``fairtune data ...``: each builder end to end through the CLI, and its failure modes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fairtune.cli import app
from fairtune.curation.records import read_records

runner = CliRunner()


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_templates_prints_balanced_counts_and_writes_a_card_that_matches(tmp_path):
    out = tmp_path / "t"
    result = runner.invoke(app, ["data", "templates", "--out", str(out), "--per-occupation", "1",
                                 "--format", "text", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "after gender records: female 75, male 75, neutral 75" in result.output
    card = json.loads((out / "data_card.json").read_text())
    rows = read_records(out / "train.jsonl") + read_records(out / "validation.jsonl")
    counts = {}
    for row in rows:
        value = row["meta"]["attributes"]["gender"]
        counts[value] = counts.get(value, 0) + 1
    assert counts == card["counts"]["after"]["attributes"]["gender"] == {"female": 75, "male": 75, "neutral": 75}
    assert card["contamination"]["overlaps"] == [] and len(card["contamination"]["references"]) >= 10


def test_cda_two_sided_doubles_gendered_records_and_balances_terms(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"messages": [
        {"role": "user", "content": "My aunt is a pilot. What gift would she like?"},
        {"role": "assistant", "content": "Ask her about her favourite routes."}]}) + "\n"
        + json.dumps({"text": "A quiet morning with rain on the windows."}) + "\n")
    out = tmp_path / "cda"
    result = runner.invoke(app, ["data", "cda", str(source), "--out", str(out), "--validation", "0"])
    assert result.exit_code == 0, result.output
    rows = lines(out / "train.jsonl")
    assert len(rows) == 3
    swapped = next(r for r in rows if r["meta"]["kind"] == "counterfactual")
    assert swapped["messages"][0]["content"] == "My uncle is a pilot. What gift would he like?"
    assert swapped["messages"][1]["content"] == "Ask him about his favourite routes."
    card = json.loads((out / "data_card.json").read_text())
    assert card["counts"]["before"]["terms"]["gender"] == {"female": 4, "male": 0}
    assert card["counts"]["after"]["terms"]["gender"] == {"female": 4, "male": 4}
    assert card["sources"][0]["source"] == str(source) and len(card["sources"][0]["sha256"]) == 64


def test_overlap_with_an_audit_suite_fails_and_writes_only_the_report(tmp_path):
    from fairtune.audits import AuditOptions, get_audit

    item = get_audit("stereotype-pairs").load(None, AuditOptions()).items[0]
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "leak", "text": f"Preface. {item.sent_more} More text."}) + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "cda", str(source), "--out", str(out)])
    assert result.exit_code == 2
    assert "record 'leak' ~ stereotype-pairs (exact)" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["contamination.json"]
    allowed = runner.invoke(app, ["data", "cda", str(source), "--out", str(out), "--force", "--allow-overlap"])
    assert allowed.exit_code == 0
    assert json.loads((out / "data_card.json").read_text())["contamination"]["allowed"] is True


def test_check_reports_bad_rows_in_one_line(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine words here"}\n{"prompt": "only a prompt"}\n')
    result = runner.invoke(app, ["data", "check", str(source)])
    assert result.exit_code == 2
    assert f"{source}, row 2, field 'completion': missing or empty" in " ".join(result.output.split())


def test_safety_anchors_subset_is_balanced(tmp_path):
    out = tmp_path / "anchors"
    result = runner.invoke(app, ["data", "safety-anchors", "--out", str(out), "--n-refusal", "20",
                                 "--n-helpful", "30", "--validation", "0"])
    assert result.exit_code == 0, result.output
    kinds = [r["meta"]["kind"] for r in lines(out / "train.jsonl")]
    assert kinds.count("anchor-refusal") == 20 and kinds.count("anchor-helpful") == 30


def test_bad_input_to_a_builder_exits_2_in_one_line_and_writes_nothing(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine words here"}\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    frames = tmp_path / "frames.txt"
    frames.write_text("f1 | The {occupation} finished {poss} shift.\nf2 | The {occupation} met {colour}.\n")
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text('{"prompt": "p", "response": "r", "label": "maybe"}\n')
    cases = [
        (["data", "cda", str(source)], f"{source}, row 2, field 'messages'"),
        (["data", "templates", "--frames", str(frames)], f"{frames}, row 2"),
        (["data", "safety-anchors", "--anchors", str(anchors)], f"{anchors}, row 1, field 'label'"),
    ]
    for index, (args, where) in enumerate(cases):
        out = tmp_path / f"out{index}"
        result = runner.invoke(app, [*args, "--out", str(out)])
        message = " ".join(result.output.split())
        assert result.exit_code == 2 and where in message and "Traceback" not in result.output, args
        assert len([line for line in result.output.splitlines() if line.strip()]) <= 2   # console wrap
        assert not out.exists()
