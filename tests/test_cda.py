"""Counterfactual data augmentation: the golden sentences, the record builder, term counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairtune.curation.card import describe
from fairtune.curation.cda import (AXES, CDAError, augment_records, axis_values, plural, swap_text,
                                   term_counts, wordlist_path)
from fairtune.curation.hygiene import split
from fairtune.curation.records import validate_record
from fairtune.errors import FairtuneError

GOLDEN = Path(__file__).parent / "data" / "cda_golden.jsonl"
GOLDEN_CASES = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=[f"{i:02d}-{c['input'][:30]}" for i, c in enumerate(GOLDEN_CASES)])
def test_golden(case):
    got = swap_text(case["input"], axis=case["axis"], mode=case["mode"], target=case.get("target"))
    assert got == case["expected"]


def test_golden_file_covers_every_axis_and_mode():
    assert len(GOLDEN_CASES) >= 60
    assert {c["axis"] for c in GOLDEN_CASES} == set(AXES)
    assert {c["mode"] for c in GOLDEN_CASES} == {"one-sided", "two-sided", "neutral"}
    for case in GOLDEN_CASES:
        assert set(case) <= {"input", "axis", "mode", "target", "expected"}


def test_text_without_terms_is_unchanged():
    text = "The weather in the valley was mild, and the manager filed a report on germane topics."
    for axis in AXES:
        assert swap_text(text, axis=axis) == text
    assert swap_text(text, mode="neutral") == text


def test_swapping_twice_restores_the_text():
    text = "She told him that her brother and Mary's son met the queen."
    assert swap_text(swap_text(text)) == text


def test_default_rule_is_deterministic_and_resolver_can_override():
    text = "I read her notes."
    assert swap_text(text) == swap_text(text) == "I read his notes."
    seen = []

    def prefer_second(full, start, end, options):
        seen.append((full[start:end], options))
        return options[1]

    assert swap_text(text, resolver=prefer_second) == "I read him notes."
    assert seen == [("her", ("his", "him"))]
    with pytest.raises(CDAError, match="resolver returned"):
        swap_text(text, resolver=lambda *args: "its")


def test_multivalued_swap_without_target_rotates_through_the_values():
    values = axis_values("religion")
    assert swap_text("A Christian family.", axis="religion") == f"A {values[1].capitalize()} family."


@pytest.mark.parametrize("kwargs, message", [
    ({"axis": "colour"}, "unknown CDA axis 'colour'"),
    ({"mode": "sideways"}, "unknown CDA mode 'sideways'"),
    ({"axis": "race", "mode": "neutral"}, "neutral mode works on the gender axis only"),
    ({"axis": "religion", "target": "pastafarian"}, "unknown religion target 'pastafarian'"),
    ({"mode": "neutral", "target": "male"}, "takes no target"),
])
def test_bad_names_raise_one_line_errors(kwargs, message):
    with pytest.raises(CDAError, match=message) as error:
        swap_text("She sings.", **kwargs)
    assert isinstance(error.value, FairtuneError) and isinstance(error.value, ValueError)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"axes": ("gender", "height")}, "unknown CDA axis 'height'"),
    ({"mode": "both"}, "unknown CDA mode 'both'"),
    ({"roles": ("narrator",)}, "unknown role 'narrator'"),
    ({"fields": ("title",)}, "unknown field 'title'"),
    ({"max_counterfactuals": 0}, "max_counterfactuals"),
])
def test_augment_records_rejects_bad_options(kwargs, message):
    with pytest.raises(CDAError, match=message):
        augment_records([{"text": "She sings."}], **kwargs)


# --- records -----------------------------------------------------------------------------------

def chat(record_id="c1"):
    return {"id": record_id, "messages": [
        {"role": "system", "content": "You advise her."},
        {"role": "user", "content": "My sister wants to be an actress."},
        {"role": "assistant", "content": "She should take acting classes."}],
        "meta": {"source": "chats.jsonl", "attributes": {"topic": "careers"}}}


def test_two_sided_chat_keeps_original_and_adds_counterfactual_in_one_group():
    out = augment_records([chat()])
    assert [r["meta"]["kind"] for r in out] == ["original", "counterfactual"]
    original, counterfactual = out
    assert original["messages"] == chat()["messages"]
    assert [m["content"] for m in counterfactual["messages"]] == [
        "You advise her.", "My brother wants to be an actor.", "He should take acting classes."]
    assert original["meta"]["group"] == counterfactual["meta"]["group"] == "c1"
    assert original["id"] == "c1" and counterfactual["id"] == "c1-cf-gender"
    assert original["meta"]["attributes"] == {"topic": "careers", "gender": "female"}
    assert counterfactual["meta"]["attributes"] == {"topic": "careers", "gender": "male"}
    assert counterfactual["meta"]["source"] == "chats.jsonl"
    assert counterfactual["meta"]["cda"] == {"axis": "gender", "mode": "two-sided", "swaps": 3}
    for row, record in enumerate(out):
        validate_record(record, row=row)


def test_role_selection_decides_which_turns_change():
    out = augment_records([chat()], roles=("system",), mode="one-sided")
    assert [m["content"] for m in out[0]["messages"]] == [
        "You advise him.", "My sister wants to be an actress.", "She should take acting classes."]
    # Nothing to swap in the chosen roles: the record passes through.
    record = {"messages": [{"role": "user", "content": "Hello there."},
                           {"role": "assistant", "content": "She is here."}]}
    assert augment_records([record], roles=("user",)) == [{**record, "meta": {"kind": "original"}}]


def test_prompt_completion_fields():
    record = {"id": "p1", "prompt": "Describe the king.", "completion": "He is generous to his people."}
    out = augment_records([record], fields=("completion",), mode="one-sided")
    assert len(out) == 1
    assert out[0]["prompt"] == "Describe the king."
    assert out[0]["completion"] == "She is generous to her people."
    both = augment_records([record], mode="one-sided")
    assert both[0]["prompt"] == "Describe the queen."


def test_text_records_one_sided_and_neutral():
    record = {"id": "t1", "text": "The waitress said she was tired."}
    one = augment_records([record], mode="one-sided")
    assert [(r["id"], r["text"], r["meta"]["kind"]) for r in one] == [
        ("t1-cf-gender", "The waiter said he was tired.", "counterfactual")]
    neutral = augment_records([record], mode="neutral")
    assert [(r["id"], r["text"]) for r in neutral] == [("t1-neutral", "The server said they were tired.")]
    assert neutral[0]["meta"]["attributes"] == {"gender": "neutral"}


def test_records_without_terms_pass_through_unchanged():
    records = [{"id": "n1", "text": "The committee met at noon."},
               {"id": "n2", "prompt": "Add 2 and 3.", "completion": "5", "meta": {"kind": "template"}}]
    out = augment_records(records, axes=AXES)
    assert out == [{**records[0], "meta": {"kind": "original"}}, records[1]]


def test_ids_stay_unique_and_groups_stay_together_in_the_split():
    records = [{"id": f"r{i}", "text": f"Her report number {i} impressed the chairman."} for i in range(20)]
    records += [{"text": "He agreed."}, {"text": "He agreed."}]   # no ids, same content
    out = augment_records(records)
    ids = [r.get("id") for r in out if "id" in r]
    assert len(ids) == len(set(ids))
    train, validation = split(out, validation_fraction=0.3, seed=1)
    for group in {r["meta"]["group"] for r in out}:
        sides = {"train" if r in train else "validation" for r in out if r["meta"]["group"] == group}
        assert len(sides) == 1


def test_multivalued_axes_draw_seeded_distinct_counterfactuals():
    record = {"id": "m1", "text": "A Christian family moved in.", "meta": {"kind": "template"}}
    out = augment_records([record], axes=("religion",), max_counterfactuals=3, seed=7)
    assert out[0]["meta"]["kind"] == "template" and out[0]["meta"]["attributes"] == {"religion": "christian"}
    counterfactuals = out[1:]
    assert len(counterfactuals) == 3
    targets = [r["meta"]["cda"]["mapping"]["christian"] for r in counterfactuals]
    assert len(set(targets)) == 3 and "christian" not in targets
    for record_out, target in zip(counterfactuals, targets):
        assert record_out["meta"]["attributes"]["religion"] == target
        assert record_out["id"] == f"m1-cf-religion-{target}"
        assert record_out["meta"]["cda"]["from_kind"] == "template"
        assert record_out["text"] != record["text"]
    assert augment_records([record], axes=("religion",), max_counterfactuals=3, seed=7) == out
    # More than there are other values: each other value once.
    everything = augment_records([record], axes=("religion",), max_counterfactuals=50)
    assert len(everything) == len(axis_values("religion"))


def test_multivalued_mapping_keeps_present_values_apart():
    record = {"text": "Christian and Muslim leaders met."}
    for seed in range(10):
        (_, counterfactual) = augment_records([record], axes=("religion",), seed=seed)
        mapping = counterfactual["meta"]["cda"]["mapping"]
        assert set(mapping) == {"christian", "muslim"}
        assert len(set(mapping.values())) == 2 and all(k != v for k, v in mapping.items())


def test_several_axes_each_swapped_from_the_original():
    record = {"id": "x", "text": "She is a Nigerian engineer."}
    out = augment_records([record], axes=("gender", "nationality"), mode="one-sided")
    assert [r["meta"]["cda"]["axis"] for r in out] == ["gender", "nationality"]
    assert out[0]["text"] == "He is a Nigerian engineer."
    assert out[1]["text"].startswith("She is a") and "Nigerian" not in out[1]["text"]


# --- term counts -------------------------------------------------------------------------------

def test_term_counts_per_axis_and_value():
    counts = term_counts(["She met him and his sister Mary.", "A Black woman prayed at the mosque.",
                          "Visit https://example.com/she or `he`."])
    # she, sister, Mary, woman; him, his (nothing in the URL or the code span)
    assert counts["gender"] == {"female": 4, "male": 2}
    assert counts["race"]["black"] == 1 and sum(counts["race"].values()) == 1
    assert counts["religion"]["muslim"] == 1
    assert set(counts) == set(AXES)
    assert list(counts["age"]) == list(axis_values("age"))
    assert term_counts(["The committee met."], axes=("gender",)) == {"gender": {"female": 0, "male": 0}}


def test_term_counts_before_and_after_balance_as_a_card_counter():
    records = [{"text": "He said his brother is a fireman."}, {"text": "The weather is mild."}]
    before = describe(records, term_counter=term_counts)["terms"]["gender"]
    after = describe(augment_records(records), term_counter=term_counts)["terms"]["gender"]
    assert before == {"female": 0, "male": 4}
    assert after == {"female": 4, "male": 4}


# --- word lists --------------------------------------------------------------------------------

def test_word_lists_load_and_are_documented():
    for axis in AXES:
        text = wordlist_path(axis).read_text(encoding="utf-8")
        assert text.startswith("#"), f"{axis}.tsv needs a header comment"
        assert len(axis_values(axis)) >= 2
    gender = wordlist_path("gender").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("name\t") for line in gender) >= 50
    assert sum(line.split("\t")[0] in ("noun", "word", "adj", "title") for line in gender) >= 50
    assert axis_values("gender") == ("female", "male")


@pytest.mark.parametrize("word, expected", [("actress", "actresses"), ("chairman", "chairmen"), ("woman", "women"),
                                            ("German", "Germans"), ("lady", "ladies"), ("wife", "wives"),
                                            ("hero", "heroes"), ("monarch", "monarchs"),
                                            ("police officer", "police officers"), ("child", "children")])
def test_plural(word, expected):
    assert plural(word) == expected
