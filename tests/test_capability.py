import dataclasses
import json
import math
from collections import Counter

import numpy as np
import pytest

from fairtune.audits import AuditOptions, get_audit
from fairtune.audits.capability import (NO_REFERENCE, PASSAGES_FILE, PROMPTS_FILE, Passage, _prompt_tail_tokens,
                                        builtin_path, capability_metrics, drift_record, passage_record,
                                        read_passages, read_prompts)
from fairtune.errors import FairtuneError, InputError
from fairtune.io import read_jsonl
from fairtune.runner import run_audit
from tiny_models import save_tiny_model_dir, tiny_llama

# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def talkative_reference(tiny_dir):
    """The tiny model's weights, told not to emit whitespace tokens: greedy, a random tied-embedding
    model repeats its last input token (the template's newline) and its reply strips to nothing."""
    from fairtune.models import load_model

    loaded = load_model(str(tiny_dir))
    tok = loaded.tokenizer
    loaded.model.generation_config.suppress_tokens = [
        i for i in range(len(tok)) if not tok.decode([i]).strip() and i not in tok.all_special_ids]
    return loaded


@pytest.fixture(scope="module")
def other_loaded(tmp_path_factory):
    from fairtune.models import load_model

    return load_model(str(save_tiny_model_dir(tmp_path_factory.mktemp("other-llama"), seed=1)))


@pytest.fixture
def passages_jsonl(tmp_path):
    path = tmp_path / "passages.jsonl"
    rows = [{"id": "a", "topic": "food", "text": "Rice is rinsed, boiled and left to rest."},
            {"id": "b", "topic": "food", "text": "Soup simmers until the potatoes are soft."},
            {"id": 7, "topic": "sky", "text": "Fog lifts when the sun warms the valley."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- the built-in suite and reading -------------------------------------------------------------


def test_builtin_suite_is_ours_sized_and_broad():
    passages, fmt = read_passages(builtin_path(PASSAGES_FILE))
    topics = Counter(p.topic for p in passages)
    assert fmt == "jsonl" and len(passages) == 24 and len(topics) == 8 and set(topics.values()) == {3}
    assert all(60 <= len(p.text.split()) <= 120 for p in passages)
    assert len({p.id for p in passages}) == 24
    prompts = read_prompts(builtin_path(PROMPTS_FILE))
    assert len(prompts) == 16 and len({p.id for p in prompts}) == 16
    dataset = get_audit("capability").load(None, AuditOptions())
    assert dataset.source == "builtin:capability" and len(dataset.items) == 24 + 16 and not dataset.skipped


def test_plain_text_passages_are_split_on_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst line of one.\r\nIts second line.\r\n\r\n \t \n\n"
                     b"  Second passage, indented.\n\n\nThird.")
    passages, fmt = read_passages(path)
    assert fmt == "plain-text"
    assert passages == [Passage("passage-1", "text", "First line of one.\nIts second line.", 1),
                        Passage("passage-2", "text", "Second passage, indented.", 6),
                        Passage("passage-3", "text", "Third.", 9)]


def test_jsonl_passages_keep_text_as_written_and_default_id_and_topic(tmp_path):
    path = tmp_path / "corpus.ndjson"
    path.write_text('{"text": " Spaced text.\\n", "source": "ignored"}\n\n{"id": 3, "topic": "sky", '
                    '"text": "Blue."}\n', encoding="utf-8")
    passages, fmt = read_passages(path)
    assert fmt == "jsonl"
    assert passages == [Passage("line-1", "text", " Spaced text.\n", 1), Passage("3", "sky", "Blue.", 3)]


BAD_INPUTS = {
    # name: (file name, bytes, expected row, expected field, text in message)
    "empty text file": ("c.txt", b"", None, None, "empty file"),
    "blank text file": ("c.txt", b" \n\t\n\n", None, None, "empty file"),
    "non-utf8 text": ("c.txt", b"Fine passage.\n\nCaf\xe9 passage.\n", 3, "text", "not valid UTF-8"),
    "json suffix": ("c.json", b'[{"text": "a"}]', None, None, "'.json' files are not read"),
    "csv suffix": ("c.csv", b"text\nhello\n", None, None, "'.csv' files are not read"),
    "empty jsonl": ("c.jsonl", b"\n\n", None, None, "empty file"),
    "invalid json": ("c.jsonl", b'{"text": "a"}\n{"text": "b"\n', 2, None, "invalid JSON"),
    "not an object": ("c.jsonl", b'["a"]\n', 1, None, "JSON object"),
    "missing text": ("c.jsonl", b'{"text": "a"}\n{"body": "b"}\n', 2, "text", "missing or empty"),
    "blank text": ("c.jsonl", b'{"text": "  "}\n', 1, "text", "missing or empty"),
    "text not a string": ("c.jsonl", b'{"text": 12}\n', 1, "text", "expected a string, got a number"),
    "non-utf8 jsonl": ("c.jsonl", b'{"id": "x", "text": "a"}\n{"id": "y", "text": "caf\xe9"}\n', 2, "text",
                       "not valid UTF-8"),
    "duplicate id": ("c.jsonl", b'{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n', 2, "id",
                     "repeats row 1"),
    "id a list": ("c.jsonl", b'{"id": [1], "text": "a"}\n', 1, "id", "got a list"),
    "id a boolean": ("c.jsonl", b'{"id": true, "text": "a"}\n', 1, "id", "got a boolean"),
    "empty topic": ("c.jsonl", b'{"topic": " ", "text": "a"}\n', 1, "topic", "empty value"),
    "reserved topic": ("c.jsonl", b'{"topic": "drift", "text": "a"}\n', 1, "topic", "reserved"),
    "reserved id": ("c.jsonl", b'{"id": "drift-d01", "text": "a"}\n', 1, "id", "reserved"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_row_and_field(tmp_path, case):
    name, content, row, field, text = BAD_INPUTS[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        get_audit("capability").load(path, AuditOptions())
    error = info.value
    assert (error.row, error.field) == (row, field)
    message = str(error)
    assert message.startswith(str(path)) and text in message and "\n" not in message


def test_missing_file_and_directory_are_input_errors(tmp_path):
    for path, text in ((tmp_path / "nope.txt", "no such file"), (tmp_path, "is a directory")):
        with pytest.raises(InputError, match=text):
            get_audit("capability").load(path, AuditOptions())


# -- metric arithmetic on hand-made records -------------------------------------------------------


def passage(id_, topic, n_tokens, total_logprob):
    return passage_record(Passage(id_, topic, "text", 1), n_tokens, total_logprob)


def test_perplexity_is_a_corpus_ratio_not_a_mean_of_passages():
    records = [passage("a", "x", 4, -8.0), passage("b", "y", 6, -3.0), passage("c", "y", 10, -20.0)]
    table = capability_metrics(records, seed=0).as_dict()
    assert list(table) == ["overall", "x", "y"] and set(table["overall"]) == {"perplexity", "mean_nll"}
    overall = table["overall"]
    assert overall["mean_nll"]["value"] == pytest.approx((8 + 3 + 20) / (4 + 6 + 10))     # 1.55, not 1.5
    assert overall["perplexity"]["value"] == pytest.approx(math.exp(31 / 20))
    assert table["y"]["perplexity"]["value"] == pytest.approx(math.exp(23 / 16)) and table["y"]["mean_nll"]["n"] == 2
    assert records[0]["outcome"] == {"mean_nll": 2.0, "perplexity": pytest.approx(math.exp(2.0))}
    # The interval: 2000 resamples of whole passages drawn with default_rng(seed), percentiles 2.5 and 97.5.
    picks = np.random.default_rng(0).integers(0, 3, size=(2000, 3))
    ratios = np.array([8.0, 3.0, 20.0])[picks].sum(1) / np.array([4, 6, 10])[picks].sum(1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    assert (overall["mean_nll"]["ci_low"], overall["mean_nll"]["ci_high"]) == pytest.approx((low, high))
    assert (overall["perplexity"]["ci_low"], overall["perplexity"]["ci_high"]) == pytest.approx(
        (math.exp(low), math.exp(high)))
    assert low < 31 / 20 < high
    assert table["x"]["perplexity"]["n"] == 1 and table["x"]["perplexity"]["ci_low"] is None
    assert capability_metrics(records, seed=0).as_dict() == table  # same seed, same intervals


def test_drift_metrics_pool_positions_over_measured_prompts():
    from fairtune.audits.capability import DriftPrompt

    records = [passage("a", "x", 4, -8.0), passage("b", "x", 4, -4.0),
               drift_record(DriftPrompt("p1", "Q1"), "reply one", "stop", [0.1, 0.3], [True, False]),
               drift_record(DriftPrompt("p2", "Q2"), "reply two", "length", [0.2], [True]),
               drift_record(DriftPrompt("p3", "Q3"), "", "length", [], [])]
    assert records[2]["id"] == "drift-p1" and records[2]["group"] == "drift"
    assert records[2]["outcome"] == {"measured": True, "mean_kl": pytest.approx(0.2), "argmax_differs": 0.5}
    assert records[4]["outcome"]["measured"] is False and records[4]["outcome"]["mean_kl"] is None
    table = capability_metrics(records, seed=0).as_dict()
    overall = table["overall"]
    assert overall["kl_to_reference"]["value"] == pytest.approx(0.6 / 3)   # not the mean of 0.2 and 0.2
    assert overall["pct_argmax_differs"]["value"] == pytest.approx(1 / 3)   # not the mean of 0.5 and 0
    assert overall["kl_to_reference"]["n"] == 2 and overall["perplexity"]["n"] == 2
    assert overall["kl_to_reference"]["ci_low"] <= 0.2 <= overall["kl_to_reference"]["ci_high"]
    # Drift is not split by topic; topic rows carry the same columns, empty.
    assert list(table) == ["overall", "x"]
    assert table["x"]["kl_to_reference"] == {"value": None, "ci_low": None, "ci_high": None, "n": 0,
                                             "confidence": 0.95}
    # Drift records alone: no passages, so no perplexity; equal prompts give a zero-width interval.
    drift_only = capability_metrics([records[3], records[3]], seed=0).as_dict()["overall"]
    assert drift_only["perplexity"] == {"value": None, "ci_low": None, "ci_high": None, "n": 0, "confidence": 0.95}
    assert drift_only["kl_to_reference"]["ci_low"] == drift_only["kl_to_reference"]["ci_high"] == pytest.approx(0.2)


def test_prompt_tail_tokens_skip_the_template_newline_only(tiny_loaded):
    tok = tiny_loaded.tokenizer
    ids = tok("\nThe sauce", add_special_tokens=False)["input_ids"]
    assert _prompt_tail_tokens(tok, ids, "\n") == 1
    assert _prompt_tail_tokens(tok, ids, "") == 0
    merged = tok(" sauce", add_special_tokens=False)["input_ids"]   # 'Ġs' carries the space and a letter
    assert _prompt_tail_tokens(tok, merged, " ") == 0


# -- runs on the tiny model -----------------------------------------------------------------------


def test_without_reference_drift_is_not_measured(tiny_loaded, passages_jsonl):
    run = run_audit("capability", model=tiny_loaded, data=passages_jsonl, seed=3)
    assert [r["id"] for r in run.records] == ["a", "b", "7"] and {r["group"] for r in run.records} == {"food", "sky"}
    assert run.summary["details"]["drift"] == NO_REFERENCE
    assert set(run.summary["metrics"]["overall"]) == {"perplexity", "mean_nll"}
    assert run.summary["reference_model"] is None
    vocab = len(tiny_loaded.tokenizer)
    assert 0.5 * vocab < run.summary["metrics"]["overall"]["perplexity"]["value"] < 2 * vocab  # random model


def test_drift_is_zero_against_the_same_weights(tiny_loaded, talkative_reference, passages_jsonl):
    run = run_audit("capability", model=tiny_loaded, reference=talkative_reference, data=passages_jsonl,
                    max_new_tokens=4)
    drift = [r for r in run.records if r["group"] == "drift"]
    assert len(drift) == 16 and all(r["outcome"]["measured"] for r in drift)
    tok = tiny_loaded.tokenizer
    for r in drift:
        assert r["inputs"]["continuation"] and r["scores"]["kl"] == [0.0] * r["scores"]["n_tokens"]
        # The positions are the reply's own tokens: the template's newline is not among them.
        assert r["scores"]["n_tokens"] == len(tok(r["inputs"]["continuation"], add_special_tokens=False)["input_ids"])
    overall = run.summary["metrics"]["overall"]
    assert overall["kl_to_reference"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 16, "confidence": 0.95}
    assert overall["pct_argmax_differs"]["value"] == 0.0
    assert run.summary["details"]["drift"]["n_measured"] == 16


def test_drift_end_to_end_against_another_model(other_loaded, talkative_reference, passages_jsonl, tmp_path):
    out = tmp_path / "run"
    run = run_audit("capability", model=other_loaded, reference=talkative_reference, data=passages_jsonl,
                    out=out, max_new_tokens=4, seed=2)
    records = read_jsonl(out / "records.jsonl")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == run.summary and len(records) == 3 + 16
    drift = [r for r in records if r["group"] == "drift"]
    for r in drift:
        scores = r["scores"]
        assert len(scores["kl"]) == len(scores["same_argmax"]) == scores["n_tokens"] > 0
        assert scores["total_kl"] == pytest.approx(sum(scores["kl"])) and min(scores["kl"]) > 0
        assert scores["n_argmax_differs"] == scores["same_argmax"].count(False)
    overall = summary["metrics"]["overall"]
    pooled = sum(r["scores"]["total_kl"] for r in drift) / sum(r["scores"]["n_tokens"] for r in drift)
    assert overall["kl_to_reference"]["value"] == pytest.approx(pooled) and pooled > 1e-3
    assert overall["kl_to_reference"]["ci_low"] < pooled < overall["kl_to_reference"]["ci_high"]
    # A report recomputes every metric from records.jsonl alone.
    assert capability_metrics(records, seed=2).as_dict() == summary["metrics"]
    details = summary["details"]["drift"]
    assert details["n_prompts"] == 16 and details["positions"] == sum(r["scores"]["n_tokens"] for r in drift)
    assert summary["reference_model"]["fingerprint"] == talkative_reference.fingerprint


def test_empty_replies_are_kept_and_marked_unmeasured(tiny_loaded, passages_jsonl):
    # Greedy, the untouched tiny model replies with newlines only, which strip to nothing.
    run = run_audit("capability", model=tiny_loaded, reference=tiny_loaded, data=passages_jsonl, max_new_tokens=4)
    drift = [r for r in run.records if r["group"] == "drift"]
    assert len(drift) == 16 and not any(r["outcome"]["measured"] for r in drift)
    assert drift[0]["outcome"]["reason"] == "the reference model's reply was empty"
    assert run.summary["metrics"]["overall"]["kl_to_reference"]["n"] == 0
    assert len(run.summary["details"]["drift"]["unmeasured"]) == 16


def test_reference_on_another_tokenizer_fails_before_scoring(tiny_loaded, passages_jsonl):
    wider = dataclasses.replace(tiny_loaded, model=tiny_llama(len(tiny_loaded.tokenizer) + 8))
    with pytest.raises(FairtuneError, match="one tokenizer"):
        run_audit("capability", model=tiny_loaded, reference=wider, data=passages_jsonl)


def test_passage_longer_than_the_window_is_named_by_row(tiny_loaded, tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("A short passage.\n\n" + "word " * 300 + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        run_audit("capability", model=tiny_loaded, data=path)
    assert (info.value.row, info.value.field) == (3, "text") and "256-token window" in str(info.value)
