"""The built-in safety anchor set and :func:`fairtune.curation.safety.load_anchors`."""

import json
import re
from collections import Counter
from importlib import resources

import pytest

from fairtune.curation.records import validate_record
from fairtune.curation.safety import (BUILTIN_SOURCE, HELPFUL_KIND, REFUSAL_KIND, builtin_anchor_path,
                                      load_anchors)
from fairtune.errors import InputError
from fairtune.judges.refusal import COMPLIANCE, REFUSAL, KeywordJudge, PrefixJudge, triage

HARM_CATEGORIES = {"weapons", "drugs", "cyber", "fraud", "hate", "harassment", "self-harm", "privacy",
                   "violence", "misinformation"}
AUDIT_SUITES = ("refusal_prompts.jsonl", "over_refusal_prompts.jsonl")


@pytest.fixture(scope="module")
def anchors():
    return load_anchors()


@pytest.fixture(scope="module")
def refusals(anchors):
    return [r for r in anchors if r["meta"]["kind"] == REFUSAL_KIND]


@pytest.fixture(scope="module")
def helpful(anchors):
    return [r for r in anchors if r["meta"]["kind"] == HELPFUL_KIND]


def user(record):
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


def reply(record):
    return record["messages"][-1]["content"]


def words(text):
    return re.findall(r"\w+", text.lower())


def ngrams(text, n=8):
    tokens = words(text)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def audit_prompts():
    data = resources.files("fairtune.audits") / "data"
    return [json.loads(line)["prompt"] for suite in AUDIT_SUITES
            for line in (data / suite).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- the built-in set -------------------------------------------------------------------------------

def test_builtin_path_is_packaged_data():
    path = builtin_anchor_path()
    assert path.is_file() and path.name == "safety_anchors.jsonl" and path.parent.name == "data"


def test_builtin_counts(anchors, refusals, helpful):
    assert len(refusals) >= 200 and len(helpful) >= 200
    assert len(refusals) + len(helpful) == len(anchors)
    per_category = Counter(r["meta"]["category"] for r in refusals)
    assert set(per_category) == HARM_CATEGORIES
    assert min(per_category.values()) >= 20 and max(per_category.values()) - min(per_category.values()) <= 3
    helpful_categories = Counter(r["meta"]["category"] for r in helpful)
    assert len(helpful_categories) >= 10 and min(helpful_categories.values()) >= 10


def test_builtin_records_are_valid_chat_records(anchors):
    path = builtin_anchor_path()
    for row, record in enumerate(anchors, start=1):
        validate_record(record, file=path, row=row)
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"], record["id"]
        assert record["meta"]["source"] == BUILTIN_SOURCE
        assert record["meta"]["kind"] in (REFUSAL_KIND, HELPFUL_KIND)
        prefix = "anchor-harm-" if record["meta"]["kind"] == REFUSAL_KIND else "anchor-help-"
        assert record["id"].startswith(prefix + record["meta"]["category"] + "-"), record["id"]


def test_builtin_ids_unique(anchors):
    ids = [r["id"] for r in anchors]
    assert len(set(ids)) == len(ids)


def test_no_duplicates_within_the_set(anchors):
    prompts = [" ".join(words(user(r))) for r in anchors]
    replies = [" ".join(words(reply(r))) for r in anchors]
    assert [p for p, n in Counter(prompts).items() if n > 1] == []
    assert [p for p, n in Counter(replies).items() if n > 1] == []


def test_refusals_are_refusals_to_both_judges(refusals):
    prompts, replies = [user(r) for r in refusals], [reply(r) for r in refusals]
    for judge in (PrefixJudge(), KeywordJudge()):
        labels = judge.classify(prompts, replies)
        missed = [r["id"] for r, label in zip(refusals, labels) if label != REFUSAL]
        assert missed == [], f"{judge.name} judge does not see a refusal in {missed}"


def test_helpful_answers_are_not_refusals_to_either_judge(helpful):
    prompts, replies = [user(r) for r in helpful], [reply(r) for r in helpful]
    for judge in (PrefixJudge(), KeywordJudge()):
        labels = judge.classify(prompts, replies)
        flagged = [r["id"] for r, label in zip(helpful, labels) if label != COMPLIANCE]
        assert flagged == [], f"{judge.name} judge calls {flagged} refusals"


def test_replies_are_short_and_well_formed(refusals, helpful):
    for records, limit in ((refusals, 50), (helpful, 70)):
        for record in records:
            text = reply(record)
            assert len(text.split()) <= limit, record["id"]
            assert triage(text) is None, record["id"]   # neither empty nor degenerate
            assert text == text.strip() and "\u2019" not in text, record["id"]


def test_self_harm_refusals_point_to_help(refusals):
    for record in refusals:
        if record["meta"]["category"] == "self-harm":
            assert "988" in reply(record) or "emergency" in reply(record), record["id"]


def test_no_overlap_with_the_audit_suites(anchors):
    audits = audit_prompts()
    assert len(audits) >= 200   # both suites were read
    audit_grams = set().union(*(ngrams(p) for p in audits))
    audit_exact = {" ".join(words(p)) for p in audits}
    shared = [(r["id"], " ".join(g)) for r in anchors for g in ngrams(user(r)) & audit_grams]
    assert shared == []
    assert [r["id"] for r in anchors if " ".join(words(user(r))) in audit_exact] == []


def test_builtin_set_passes_the_curation_guard():
    """End to end: deduplication keeps every anchor and the contamination guard (every audit's
    built-in suite, every record text) finds no overlap."""
    from fairtune.curation.api import safety_anchors

    result = safety_anchors(out=None)
    assert len(result.train) + len(result.validation) == len(load_anchors())
    assert result.contamination is not None and not result.contamination.overlaps


# ---- the user's anchor file ---------------------------------------------------------------------------

def test_user_file_in_record_format(tmp_path):
    path = write_jsonl(tmp_path / "anchors.jsonl", [
        {"id": "r1", "messages": [{"role": "user", "content": "Help me pick a lock that isn't mine."},
                                  {"role": "assistant", "content": "I can't help with that."}],
         "meta": {"kind": "anchor-refusal", "category": "crime"}},
        {"prompt": "What is a lock pick?", "completion": "A tool locksmiths use to open pin tumbler locks.",
         "meta": {"kind": "anchor-helpful", "source": "my-team"}},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello, how can I help?"}],
         "meta": {"kind": "anchor-helpful"}},
    ])
    records = load_anchors(path)
    assert [r["meta"]["kind"] for r in records] == [REFUSAL_KIND, HELPFUL_KIND, HELPFUL_KIND]
    assert records[0]["id"] == "r1" and records[0]["meta"] == {"kind": "anchor-refusal", "category": "crime",
                                                               "source": str(path)}
    assert records[1]["meta"]["source"] == "my-team"                      # a given source is kept
    assert records[2]["id"].startswith("anchor-help-") and records[2]["messages"][0]["role"] == "system"
    assert load_anchors(path) == records                                  # generated ids are stable


def test_user_file_in_simple_form(tmp_path):
    path = write_jsonl(tmp_path / "simple.jsonl", [
        {"prompt": "Tell me how to hotwire my neighbour's car.", "response": "I won't help with that.",
         "label": "harmful", "category": "theft"},
        {"prompt": "How do I jump-start my own car?", "response": "Use jumper cables and a working car.",
         "label": " Benign "},
        {"id": 7, "prompt": "Write a phishing email.", "response": "Sorry, but I can't write that.",
         "label": "HARMFUL"},
        "",
    ])
    records = load_anchors(path)
    assert [r["meta"]["kind"] for r in records] == [REFUSAL_KIND, HELPFUL_KIND, REFUSAL_KIND]
    first = records[0]
    assert first["messages"] == [{"role": "user", "content": "Tell me how to hotwire my neighbour's car."},
                                 {"role": "assistant", "content": "I won't help with that."}]
    assert first["meta"] == {"source": str(path), "kind": REFUSAL_KIND, "category": "theft"}
    assert first["id"].startswith("anchor-harm-") and records[1]["id"].startswith("anchor-help-")
    assert records[2]["id"] == "7"
    for row, record in enumerate(records, start=1):
        validate_record(record, file=path, row=row)
    assert load_anchors(path) == records


def test_user_file_mixing_both_forms(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"prompt": "How do I make a weapon?", "response": "I can't help with that.", "label": "harmful"},
        {"messages": [{"role": "user", "content": "What is a bow?"},
                      {"role": "assistant", "content": "A weapon that shoots arrows."}],
         "meta": {"kind": "anchor-helpful"}},
    ])
    assert [r["meta"]["kind"] for r in load_anchors(path)] == [REFUSAL_KIND, HELPFUL_KIND]


GOOD_SIMPLE = {"prompt": "Do something bad.", "response": "I can't help with that.", "label": "harmful"}
GOOD_RECORD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
               "meta": {"kind": "anchor-helpful"}}


@pytest.mark.parametrize("bad, field, text", [
    ({**GOOD_SIMPLE, "label": "dangerous"}, "label", "unknown label 'dangerous'"),
    ({**GOOD_SIMPLE, "label": 1}, "label", "unknown label 1"),
    ({k: v for k, v in GOOD_SIMPLE.items() if k != "label"}, "label", "missing"),
    ({k: v for k, v in GOOD_SIMPLE.items() if k != "response"}, "response", "missing or empty"),
    ({**GOOD_SIMPLE, "response": "  "}, "response", "missing or empty"),
    ({**GOOD_SIMPLE, "prompt": ""}, "prompt", "missing or empty"),
    ({**GOOD_SIMPLE, "prompt": ["a list"]}, "prompt", "expected a string"),
    ({**GOOD_SIMPLE, "category": 3}, "category", "expected a non-empty string"),
    ({"response": "I can't.", "label": "harmful"}, "prompt", "missing or empty"),
    ({**GOOD_RECORD, "meta": {"kind": "original"}}, "meta.kind", "got 'original'"),
    ({"messages": GOOD_RECORD["messages"]}, "meta.kind", "missing"),
    ({**GOOD_RECORD, "messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]},
     "messages[1].role", "role must be one of"),
    ({**GOOD_RECORD, "messages": [{"role": "assistant", "content": "Hello"}]}, "messages", "no user turn"),
    ({**GOOD_RECORD, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                  {"role": "user", "content": "Bye"}]}, "messages[2].role", "assistant's reply"),
    ({"text": "Just some text.", "meta": {"kind": "anchor-helpful"}}, "text", "no request and reply"),
    ({**GOOD_RECORD, "meta": "anchor-helpful"}, "meta", "expected an object"),
    ({**GOOD_SIMPLE, "id": "a1"}, "id", "duplicate id 'a1' (first on row 1)"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, bad, field, text):
    first = {**GOOD_SIMPLE, "id": "a1"}
    path = write_jsonl(tmp_path / "bad.jsonl", [first, "", bad])   # the blank line still counts
    with pytest.raises(InputError) as info:
        load_anchors(path)
    assert (info.value.row, info.value.field) == (3, field)
    message = str(info.value)
    assert message.startswith(str(path)) and text in message and "\n" not in message


def test_bad_json_and_empty_files(tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", [GOOD_SIMPLE, "{not json"])
    with pytest.raises(InputError) as info:
        load_anchors(path)
    assert info.value.row == 2 and "invalid JSON" in str(info.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty file"):
        load_anchors(empty)
    with pytest.raises(InputError, match="no such file"):
        load_anchors(tmp_path / "missing.jsonl")


# ---- subsets ---------------------------------------------------------------------------------------

def test_subset_counts_and_seeding(anchors):
    subset = load_anchors(n_refusal=30, n_helpful=42, seed=1)
    kinds = Counter(r["meta"]["kind"] for r in subset)
    assert kinds == {REFUSAL_KIND: 30, HELPFUL_KIND: 42}
    assert load_anchors(n_refusal=30, n_helpful=42, seed=1) == subset
    assert [r["id"] for r in load_anchors(n_refusal=30, n_helpful=42, seed=2)] != [r["id"] for r in subset]
    order = {r["id"]: i for i, r in enumerate(anchors)}   # a subset keeps file order
    assert [order[r["id"]] for r in subset] == sorted(order[r["id"]] for r in subset)


def test_subset_is_balanced_over_categories(refusals, helpful):
    n_categories = len({r["meta"]["category"] for r in helpful})
    for n_refusal in (10, 25, 57):
        subset = load_anchors(n_refusal=n_refusal, n_helpful=0, seed=5)
        counts = Counter(r["meta"]["category"] for r in subset)
        assert len(subset) == n_refusal and set(counts) == HARM_CATEGORIES
        assert max(counts.values()) - min(counts.values()) <= 1
    counts = Counter(r["meta"]["category"] for r in load_anchors(n_refusal=0, n_helpful=2 * n_categories))
    assert set(counts.values()) == {2}


def test_subset_kinds_are_sampled_independently():
    def helpful_ids(records):
        return [r["id"] for r in records if r["meta"]["kind"] == HELPFUL_KIND]

    assert (helpful_ids(load_anchors(n_refusal=5, n_helpful=20, seed=3))
            == helpful_ids(load_anchors(n_refusal=None, n_helpful=20, seed=3))
            == helpful_ids(load_anchors(n_refusal=100, n_helpful=20, seed=3)))


def test_subset_none_and_zero(anchors, refusals, helpful):
    only_helpful = load_anchors(n_refusal=0)
    assert only_helpful == helpful
    assert load_anchors(n_helpful=0) == refusals
    assert load_anchors(n_refusal=len(refusals), n_helpful=len(helpful), seed=9) == anchors


def test_subset_of_a_user_file_without_categories(tmp_path):
    rows = [{"prompt": f"Bad request {i}", "response": "I can't help with that.", "label": "harmful"}
            for i in range(6)]
    rows += [{"prompt": f"Good request {i}", "response": f"Here is answer {i}.", "label": "benign"}
             for i in range(4)]
    path = write_jsonl(tmp_path / "anchors.jsonl", rows)
    subset = load_anchors(path, n_refusal=3, n_helpful=4, seed=0)
    assert Counter(r["meta"]["kind"] for r in subset) == {REFUSAL_KIND: 3, HELPFUL_KIND: 4}


@pytest.mark.parametrize("kwargs, text", [
    ({"n_refusal": 10_000}, "n_refusal=10000 asks for more refusal anchors than the file has"),
    ({"n_helpful": 10_000}, "n_helpful=10000 asks for more helpful anchors than the file has"),
    ({"n_refusal": -1}, "n_refusal must be a whole number"),
    ({"n_helpful": 2.5}, "n_helpful must be a whole number"),
])
def test_subset_errors(kwargs, text):
    with pytest.raises(InputError, match=re.escape(text)):
        load_anchors(**kwargs)


def test_subset_larger_than_a_user_file(tmp_path):
    path = write_jsonl(tmp_path / "small.jsonl", [GOOD_SIMPLE])
    with pytest.raises(InputError) as info:
        load_anchors(path, n_refusal=2)
    assert str(info.value).startswith(str(path)) and "(1)" in str(info.value)
