"""``fairtune run``: recipes validate before anything loads, stages cache and resume, gates exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairtune.errors import InputError
from fairtune.pipeline.recipe import builtin_recipes, load_recipe


def test_every_shipped_recipe_validates():
    names = set(builtin_recipes())
    assert {"quick", "gender", "gender-methods", "debias", "extrapolation", "guardrails", "methods"} <= names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.arms


@pytest.mark.parametrize("change, field", [
    ({"colour": "red"}, "colour"),
    ({"audits": [{"suite": "nope"}]}, "audits.0.suite"),
    ({"arms": [{"name": "a", "train": {"method": {"name": "lora", "rnak": 8}}}]}, "arms.0.train.method.rnak"),
    ({"arms": [{"name": "a", "train": {"data": ["x.jsonl"]}}]}, "arms.0.train.data"),
    ({"gates": [{"audit": "refusal", "metric": "refusal_rate", "max_dorp": 0.1}]}, "gates"),
])
def test_bad_recipe_fails_in_one_line_naming_the_key(tmp_path, change, field):
    import yaml

    raw = yaml.safe_load(builtin_recipes()["quick"].read_text())
    raw.update(change)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message and field in message


def _tiny_recipe(tiny_dir: Path, **changes):
    recipe = {
        "name": "tiny", "model": str(tiny_dir),
        "audits": [{"suite": "stereotype-pairs"}, {"suite": "refusal", "max_new_tokens": 3}],
        "align": {"when": "never"},
        "data": [{"builder": "templates", "args": {"axis": "gender", "per_occupation": 1}}],
        "arms": [{"name": "lora", "train": {"method": {"name": "lora", "rank": 2, "alpha": 4},
                                            "optim": {"max_steps": 2, "batch_tokens": 256}}},
                 {"name": "prompt", "train": {"method": {"name": "prompt"}}}],
        "gates": [{"audit": "stereotype-pairs", "metric": "pct_stereotype", "max_rise": 1.0}],
    }
    recipe.update(changes)
    return load_recipe(recipe)


def test_pipeline_runs_every_stage_then_resumes_from_cache(tiny_dir, tmp_path):
    from fairtune.pipeline.run import METHODS_FILE, PIPELINE_FILE, run_recipe

    lines: list[str] = []
    result = run_recipe(_tiny_recipe(tiny_dir), out=tmp_path / "run", log=lines.append)
    out = tmp_path / "run"
    assert result.passed
    for arm in ("lora", "prompt"):
        assert (out / "arms" / arm / "train" / "merged").is_dir()
        for audit in ("stereotype-pairs", "refusal"):
            assert (out / "arms" / arm / "audits" / audit / "records.jsonl").is_file()
        comparison = json.loads((out / "arms" / arm / "compare" / "comparison.json").read_text())
        assert {"stereotype-pairs", "refusal"} <= set(comparison["audits"])
    table = (out / METHODS_FILE).read_text()
    assert "| lora | lora |" in table and "| prompt | prompt |" in table
    html = (out / "report" / "report.html").read_text()
    assert '<table id="methods">' in html and html.count("<td>lora</td><td>lora</td>") == 1
    assert "All 2 gates passed." in html          # one gate, two arms: each shown once
    assert "## Methods, measured" in (out / "report" / "report.md").read_text()
    summary = json.loads((out / PIPELINE_FILE).read_text())
    assert summary["passed"] and summary["start_model"] == str(tiny_dir)
    assert not list(out.rglob(".*.partial"))

    lines.clear()
    run_recipe(_tiny_recipe(tiny_dir), out=out, log=lines.append)
    assert lines and all(line.endswith("cached") for line in lines)

    lines.clear()
    changed = _tiny_recipe(tiny_dir)
    changed.arms[0].train["optim"]["max_steps"] = 3
    run_recipe(changed, out=out, log=lines.append)
    ran = {line.removesuffix(": running") for line in lines if line.endswith("running")}
    assert ran == {"lora/train", "lora/stereotype-pairs", "lora/refusal", "lora/compare"}


def test_failed_gate_exits_1_and_names_it(tiny_dir, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from fairtune.cli import app

    raw = _tiny_recipe(tiny_dir).model_dump(mode="json")
    raw["arms"] = raw["arms"][1:]          # the prompt arm alone: no training
    raw["data"] = []
    raw["gates"] = [{"audit": "stereotype-pairs", "metric": "pct_stereotype", "min_improvement": 0.5}]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 1, result.output
    assert "gate failed: prompt" in result.stderr and "pct_stereotype" in result.stderr


def test_auto_align_runs_when_the_base_refuses_too_little(tiny_dir, tmp_path, monkeypatch):
    from fairtune.pipeline import run as pipeline_run
    from fairtune.training import align as align_module

    calls = []

    def fake_align(model, **kwargs):
        calls.append((model, kwargs))
        return align_module.AlignResult(Path(tiny_dir), tmp_path / "fake-aligned", True, {})

    monkeypatch.setattr(align_module, "align", fake_align)
    recipe = _tiny_recipe(tiny_dir, align={"when": "auto", "min_refusal": 1.0, "refusal_unlikelihood": 0.5,
                                                 "lr": 0.003},
                          data=[], arms=[{"name": "prompt", "train": {"method": {"name": "prompt"}}}], gates=[])
    result = pipeline_run.run_recipe(recipe, out=tmp_path / "run")
    assert calls and calls[0][0] == str(tiny_dir) and calls[0][1]["refusal_unlikelihood"] == 0.5
    assert calls[0][1]["lr"] == 0.003
    assert result.summary["notes"] and "aligned" in result.summary["notes"][0]
    assert (tmp_path / "run" / "aligned" / "audits" / "refusal" / "summary.json").is_file()

    calls.clear()
    never = _tiny_recipe(tiny_dir, align={"when": "never"}, data=[],
                         arms=[{"name": "prompt", "train": {"method": {"name": "prompt"}}}], gates=[])
    result = pipeline_run.run_recipe(never, out=tmp_path / "run2")
    assert not calls and not result.summary["notes"]


@pytest.mark.parametrize("bad, field", [
    ("arms: [{name: a, train: {optim: {lr: fast}}}]\n", "arms.0.train.optim.lr"),
    ("arms: [{name: a}]\nalign: {when: auto, lr: 0}\n", "align.lr"),
])
def test_cli_bad_recipe_exits_2_in_one_line_and_writes_nothing(tmp_path, bad, field):
    from typer.testing import CliRunner

    from fairtune.cli import app

    path = tmp_path / "r.yaml"
    path.write_text("name: x\naudits: [{suite: refusal}]\n" + bad + "data: [{builder: templates}]\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and field in lines[0]
    assert not out.exists()


def test_arms_choose_their_data_and_audits_and_the_table_reports_each_gap(tiny_dir, tmp_path, monkeypatch):
    """A held-out-domain arm trains on one data step and runs a subset of the audits; the base
    model gets only the refusal audit when it is aligned; the method table has a column per bias
    gap with the task accuracy beside it, and the report shows the gaps and the guard's finding."""
    from fairtune.pipeline import run as pipeline_run
    from fairtune.pipeline.run import METHODS_FILE
    from fairtune.training import align as align_module

    monkeypatch.setattr(align_module, "align", lambda model, **_: align_module.AlignResult(
        Path(tiny_dir), tmp_path / "fake-aligned", True, {}))
    pairing = {"method": {"name": "lora", "rank": 2, "alpha": 4}, "optim": {"max_steps": 2, "batch_tokens": 256},
               "objectives": [{"name": "counterfactual_pairing", "loglik_gap": 0.1}]}
    recipe = _tiny_recipe(
        tiny_dir, bias_group="gender",
        audits=[{"suite": "stereotype-pairs"}, {"suite": "coreference"}, {"suite": "refusal", "max_new_tokens": 3}],
        align={"when": "auto", "min_refusal": 1.0, "base_audits": "refusal"},
        data=[{"builder": "pairs", "name": "all", "args": {"max_pairs": 40}},
              {"builder": "pairs", "name": "jobs", "args": {"domains": ["occupations"], "max_pairs": 40}}],
        arms=[{"name": "pairing", "data": ["all"], "train": pairing},
              {"name": "held-out", "data": ["jobs"], "audits": ["stereotype-pairs"], "train": pairing}],
        gates=[{"audit": "coreference", "metric": "accuracy", "max_drop": 1.0}])
    result = pipeline_run.run_recipe(recipe, out=tmp_path / "run")
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "base" / "audits").iterdir() if p.is_dir()) == ["refusal"]
    manifest = json.loads((out / "arms" / "held-out" / "train" / "manifest.json").read_text())
    assert [Path(d["source"]).parent.name for d in manifest["data"] if d["role"] == "train"] == ["jobs"]
    assert sorted(p.name for p in (out / "arms" / "held-out" / "audits").iterdir() if p.is_dir()) == [
        "stereotype-pairs"]
    assert result.passed and [g["arm"] for g in _gates(result)] == ["pairing"]   # not the arm without coreference
    table = (out / METHODS_FILE).read_text()
    assert "gap stereotype-pairs stereotype_gap (gender)" in table and "gap coreference winobias_abs_gap" in table
    assert "coreference accuracy" in table and "closed" in table and "degenerate replies" in table
    assert "## Bias gaps by domain" in table and "stereotype_gap (gender:traits)" in table
    html = (out / "report" / "report.html").read_text()
    assert "stereotype-pairs: bias gap stereotype_gap" in html
    guard = [n for n in result.summary["notes"] if n.startswith("Data step all:")]
    assert guard and "none of them overlaps" in guard[0]


def _gates(result) -> list[dict]:
    return [{"arm": arm, **gate} for arm, gates in result.summary["gates"].items() for gate in gates]


@pytest.mark.parametrize("change, text", [
    ({"arms": [{"name": "a", "data": ["nope"]}]}, "data step 'nope'"),
    ({"arms": [{"name": "a", "audits": ["bbq"]}]}, "audit 'bbq'"),
])
def test_an_arm_naming_a_data_step_or_audit_the_recipe_lacks_fails_in_one_line(tmp_path, change, text):
    import yaml

    raw = yaml.safe_load(builtin_recipes()["quick"].read_text())
    raw.update(change)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError) as info:
        load_recipe(path)
    assert text in str(info.value) and "\n" not in str(info.value)
