"""Balanced templates: equal counts by construction, grammar, user frames, and no audit overlap."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from fairtune.curation.hygiene import deduplicate, normalise
from fairtune.curation.records import record_texts, validate_record
from fairtune.curation.templates import (
    balance_counts,
    build_templates,
    builtin_frames,
    builtin_occupations,
    indefinite_article,
    read_frames,
)
from fairtune.errors import InputError

AUDIT_DATA = Path(__file__).resolve().parents[1] / "src" / "fairtune" / "audits" / "data"


def texts(record: dict) -> str:
    return " ".join(record_texts(record))


def by_frame(records, frame, occupation):
    """The records of one frame and occupation, by attribute value."""
    return {next(iter(r["meta"]["attributes"].values())): r
            for r in records if r["meta"]["frame"] == frame and r["meta"]["occupation"] == occupation}


@pytest.fixture(scope="module")
def gender_records():
    return build_templates()


def test_builtin_frames_are_enough_and_valid():
    frames = builtin_frames()
    counts = Counter(f.format for f in frames)
    assert counts["text"] >= 20 and counts["chat"] >= 10
    assert all(f.has_pronoun for f in frames)


def test_every_group_holds_every_value_once_and_counts_are_equal(gender_records):
    groups = defaultdict(list)
    for record in gender_records:
        validate_record(record)
        meta = record["meta"]
        assert meta["kind"] == "template" and meta["source"] == "templates:builtin" and meta["frame"]
        groups[meta["group"]].append(meta["attributes"]["gender"])
    assert all(sorted(values) == ["female", "male", "neutral"] for values in groups.values())
    counts = balance_counts(gender_records)
    assert set(counts) == {"gender"}
    assert len(set(counts["gender"].values())) == 1
    n_frames = len(builtin_frames())
    assert counts["gender"]["female"] == n_frames * len(builtin_occupations())
    assert len({r["id"] for r in gender_records}) == len(gender_records)
    # the members of a group differ (so group-internal dedup keeps them all)
    for members in _group_records(gender_records).values():
        assert len({texts(r) for r in members}) == len(members)


def _group_records(records):
    groups = defaultdict(list)
    for record in records:
        groups[record["meta"]["group"]].append(record)
    return groups


def test_formats_and_bodies():
    text_only = build_templates(occupations=["nurse"], formats=("text",))
    chat_only = build_templates(occupations=["nurse"], formats=("chat",))
    assert all("text" in r for r in text_only) and all("messages" in r for r in chat_only)
    assert [m["role"] for m in chat_only[0]["messages"]] == ["user", "assistant"]


def test_per_occupation_is_a_seeded_balanced_subset():
    occupations = ["nurse", "carpenter", "accountant"]
    a = build_templates(occupations=occupations, per_occupation=3, seed=1)
    b = build_templates(occupations=occupations, per_occupation=3, seed=1)
    c = build_templates(occupations=occupations, per_occupation=3, seed=2)
    assert a == b and a != c
    frames_per = Counter((r["meta"]["occupation"], "text" in r) for r in a)
    assert set(frames_per.values()) == {3 * 3}  # 3 frames of each format, 3 values each
    assert len(set(balance_counts(a)["gender"].values())) == 1
    assert len(build_templates(occupations=occupations, per_occupation=10_000)) == \
        len(build_templates(occupations=occupations))
    with pytest.raises(InputError):
        build_templates(per_occupation=0)


def test_articles_follow_the_sound_of_the_next_word():
    for phrase, article in [("electrician", "an"), ("nurse", "a"), ("home health aide", "a"),
                            ("hour", "an"), ("honest broker", "an"), ("university lecturer", "a"),
                            ("umpire", "an"), ("occupational therapist", "an"), ("European", "a"),
                            ("MRI technician", "an"), ("young", "a"), ("older", "an"), ("one", "a")]:
        assert indefinite_article(phrase) == article, phrase
    records = build_templates(occupations=["electrician", "nurse", "insurance agent", "high school teacher"],
                              formats=("text",))
    joined = " ".join(texts(r) for r in records)
    assert "an electrician" in joined.lower() and "an insurance agent" in joined.lower()
    assert "a nurse" in joined.lower() and "a high school teacher" in joined.lower()
    assert not re.search(r"\ba (electrician|insurance)|\ban (nurse|high)\b", joined, re.I)
    assert "\x00" not in joined


def test_pronouns_capitalise_at_sentence_start_and_verbs_agree(gender_records):
    speaking = by_frame(gender_records, "speaking", "nurse")
    replies = {value: r["messages"][1]["content"] for value, r in speaking.items()}
    assert replies["female"].startswith("She could") and replies["male"].startswith("He could")
    assert replies["neutral"].startswith("They could")
    assert "as a nurse, they already know" in replies["neutral"].lower()
    assert "as a nurse, she already knows" in replies["female"].lower()
    for record in gender_records:
        body = texts(record)
        value = record["meta"]["attributes"]["gender"]
        if value == "neutral":
            assert not re.search(r"\bthey (was|is|has|knows|enjoys|plans|records|waters)\b", body, re.I), body
            assert not re.search(r"\b(she|he|her|his|him)\b", body, re.I), body
        else:
            assert not re.search(r"\b(he|she) (were|are|have|know|enjoy|plan|record|water)\b", body, re.I), body
            assert not re.search(r"\b(they|their|them)\b", body, re.I), body
        # a sentence never opens with a lower-case letter
        for sentence_start in re.findall(r"(?:^|[.!?]\s+)(\w)", body):
            assert not sentence_start.islower(), body


def test_term_axis_names_the_first_mention_only():
    records = build_templates(axis="age", occupations=["electrician"])
    assert set(balance_counts(records)) == {"age"}
    assert set(balance_counts(records)["age"].values()) == {len(builtin_frames())}
    lift = by_frame(records, "lift", "electrician")
    young, older = lift["young"]["messages"][0]["content"], lift["older"]["messages"][0]["content"]
    assert young.startswith("A young electrician and") and older.startswith("An older electrician and")
    assert "The electrician rang" in young  # the second mention stays bare
    with pytest.raises(InputError, match="unknown value"):
        build_templates(axis="age", values=("young", "female"))
    with pytest.raises(InputError, match="unknown axis"):
        build_templates(axis="height")
    with pytest.raises(InputError, match="at least two"):
        build_templates(values=("female",))
    with pytest.raises(InputError, match="unknown format"):
        build_templates(formats=("text", "poem"))


def test_value_subset_stays_balanced():
    records = build_templates(values=("female", "male"), occupations=["pilot", "nurse"])
    assert balance_counts(records) == {"gender": {"female": len(records) // 2, "male": len(records) // 2}}


def test_user_occupations_are_cleaned_and_checked():
    records = build_templates(occupations=["  beekeeper ", "beekeeper", "air traffic controller",
                                           "air-traffic controller"], formats=("text",))
    assert {r["meta"]["occupation"] for r in records} == {"beekeeper", "air traffic controller"}
    assert any("an air traffic controller" in texts(r).lower() for r in records)
    with pytest.raises(InputError, match="article"):
        build_templates(occupations=["the nurse"])
    with pytest.raises(InputError):
        build_templates(occupations=[""])


def test_user_text_frames_replace_the_builtin_ones(tmp_path):
    path = tmp_path / "frames.txt"
    path.write_text("# my frames\nbus | The {occupation} missed the bus, so {subj} {was|were} late.\n"
                    "{A} {occupation} fixed {poss} own bike.\n")
    frames = read_frames(path)
    assert [f.id for f in frames] == ["bus", "row3"]
    records = build_templates(frames_file=path, occupations=["electrician"])
    assert {r["meta"]["frame"] for r in records} == {"bus", "row3"}
    assert all(r["meta"]["source"] == f"templates:{path}" for r in records)
    bus = by_frame(records, "bus", "electrician")
    assert bus["neutral"]["text"] == "The electrician missed the bus, so they were late."
    assert bus["male"]["text"] == "The electrician missed the bus, so he was late."
    assert by_frame(records, "row3", "electrician")["female"]["text"] == "An electrician fixed her own bike."
    with pytest.raises(InputError, match="no frames of format chat"):
        build_templates(frames_file=path, formats=("chat",))


@pytest.mark.parametrize("content, row, field, text", [
    ("ok | The {occupation} lost {poss} keys.\nbad | The {occupation} lost {pronoun} keys.\n", 2, "text",
     "unknown placeholder '{pronoun}'"),
    ("The {occupation} lost {poss keys.\n", 1, "text", "unbalanced"),
    ("The {occupation} {was|were|are} late, {subj} said.\n", 1, "text", "two verb forms"),
    ("The {SUBJ} was late, {occupation}.\n", 1, "text", "unknown placeholder"),
    ("The nurse lost {poss} keys.\n", 1, "text", "no {occupation}"),
])
def test_bad_text_frames_name_file_row_and_field(tmp_path, content, row, field, text):
    path = tmp_path / "frames.txt"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        build_templates(frames_file=path, occupations=["nurse"])
    assert (info.value.row, info.value.field) == (row, field)
    assert str(info.value).startswith(str(path)) and text in str(info.value)


def test_chat_frames_from_jsonl_and_their_errors(tmp_path):
    good = {"id": "q1", "user": "Is {a} {occupation} allowed to take {poss} dog to work?",
            "assistant": "That depends on the workplace rules, not on who the {occupation} is."}
    path = tmp_path / "frames.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"text": "The {occupation} waved at {obj}."}) + "\n")
    records = build_templates(frames_file=path, occupations=["umpire"], formats=("chat",))
    assert len(records) == 3
    assert records[0]["messages"][0]["content"] == "Is an umpire allowed to take her dog to work?"

    bad = dict(good, assistant="Ask the {occupation} about {their} dog.")
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError) as info:
        build_templates(frames_file=path)
    assert (info.value.row, info.value.field) == (2, "assistant") and "{their}" in str(info.value)

    path.write_text(json.dumps(dict(good, asistant="typo")) + "\n")
    with pytest.raises(InputError) as info:
        build_templates(frames_file=path)
    assert (info.value.row, info.value.field) == (1, "asistant")

    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(InputError, match="already used"):
        build_templates(frames_file=path)


def test_a_frame_without_pronouns_cannot_balance_a_pronoun_axis(tmp_path):
    path = tmp_path / "frames.txt"
    # a verb pair alone does not count: it agrees with a pronoun subject, and there is none
    path.write_text("The {occupation} opened the shop at nine, so we {was|were} early.\n")
    with pytest.raises(InputError, match="no pronoun placeholder") as info:
        build_templates(frames_file=path)
    assert info.value.row == 1 and str(info.value).startswith(str(path))
    # a term axis names the value in the occupation's first mention, so it can
    path.write_text("The {occupation} opened the shop at nine.\n")
    records = build_templates(frames_file=path, axis="age", occupations=["nurse"])
    assert [r["text"] for r in records] == ["The young nurse opened the shop at nine.",
                                           "The older nurse opened the shop at nine."]


def test_axes_file_adds_an_axis(tmp_path):
    axes = tmp_path / "axes.json"
    axes.write_text(json.dumps({
        "pronoun_sets": {"xe": {"subj": "xe", "obj": "xem", "poss": "xyr", "refl": "xemself", "number": "singular"}},
        "axes": {"pronouns": {"values": {"she": {"pronouns": "she"}, "xe": {"pronouns": "xe"}}}}}))
    records = build_templates(axis="pronouns", axes_file=axes, occupations=["baker"], formats=("text",))
    assert set(balance_counts(records)["pronouns"]) == {"she", "xe"}
    assert any("xyr" in r["text"] for r in records)
    axes.write_text(json.dumps({"axes": {"pronouns": {"values": {"a": {"pronouns": "she"},
                                                                  "b": {"pronouns": "ze"}}}}}))
    with pytest.raises(InputError) as info:
        build_templates(axis="pronouns", axes_file=axes)
    assert info.value.field == "axes.pronouns.values.b.pronouns" and str(info.value).startswith(str(axes))


def _audit_ngrams(n: int = 8) -> set[tuple[str, ...]]:
    grams: set[tuple[str, ...]] = set()
    for path in AUDIT_DATA.rglob("*"):
        if path.is_file():
            words = normalise(path.read_text(encoding="utf-8", errors="ignore")).split()
            grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return grams


def test_no_8_word_sequence_is_shared_with_any_audit_suite(gender_records):
    audit = _audit_ngrams()
    assert len(audit) > 1000
    overlap = set()
    for record in gender_records + build_templates(axis="age"):
        words = normalise(texts(record)).split()
        overlap.update(" ".join(words[i:i + 8]) for i in range(len(words) - 7) if tuple(words[i:i + 8]) in audit)
    assert not overlap
    occupation_frames = [line.split("|")[-1].strip().replace("{occupation}", "")
                         for line in (AUDIT_DATA / "occupation_templates.txt").read_text().splitlines()
                         if line.strip() and not line.startswith("#")]
    for frame in builtin_frames():
        for text in frame.parts.values():
            assert not any(normalise(prompt) in normalise(text) for prompt in occupation_frames), frame.id


def test_groups_survive_dedup_whole_and_balanced(gender_records):
    kept, report = deduplicate(gender_records)
    # Templates share their frame across occupations by design; the frames are kept short
    # enough that the default near-duplicate check keeps (almost) every group.
    assert len(kept) >= 0.98 * len(gender_records)
    assert len(set(balance_counts(kept)["gender"].values())) == 1
