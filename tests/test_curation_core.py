"""The shared curation steps: record validation, group-aware dedup and split, the data card."""

from __future__ import annotations

import json

import pytest

from fairtune.curation.build import GuardSettings, finalize
from fairtune.curation.hygiene import deduplicate, normalise, split
from fairtune.curation.records import read_records, record_texts, validate_record
from fairtune.errors import InputError, OutputError


def chat(user, assistant, **meta):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            **({"meta": meta} if meta else {})}


@pytest.mark.parametrize("line, row_field", [
    ('{"text": ""}', "text"),
    ('{"prompt": "a"}', "completion"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "messages[0].role"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "messages"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}',
     "messages[1].content"),
    ('{"text": "a", "prompt": "b", "completion": "c"}', None),
    ('{"text": "a", "meta": []}', "meta"),
])
def test_bad_records_name_file_row_and_field(tmp_path, line, row_field):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(InputError) as info:
        read_records(path)
    assert (info.value.row, info.value.field) == (2, row_field)
    assert str(info.value).startswith(str(path))


def test_record_texts_pick_roles_and_fields():
    record = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                           {"role": "assistant", "content": "A"}]}
    assert record_texts(record) == ["S", "U", "A"]
    assert record_texts(record, roles=("assistant",)) == ["A"]
    assert record_texts(validate_record({"prompt": "P", "completion": "C"})) == ["P", "C"]


def test_normalise_folds_case_punctuation_accents_and_space():
    assert normalise("  The Café,   ISN'T  open!") == normalise("the cafe isn t open")


def test_exact_and_near_duplicates_are_removed_but_counterfactual_pairs_kept():
    base = "the engineer finished the report before the meeting and then went home early to rest"
    records = [
        {"id": "a", "text": base.capitalize() + ".", "meta": {"group": "g1"}},
        # its counterfactual partner: near-identical by design, same group, must survive
        {"id": "a-cf", "text": base.replace("engineer", "nurse") + ".", "meta": {"group": "g1"}},
        {"id": "b", "text": base.upper()},                                   # exact duplicate of g1
        {"id": "c", "text": base.replace("early", "late")},                  # near duplicate
        {"id": "d", "text": "a completely different sentence about the weather in spring"},
    ]
    kept, report = deduplicate(records, near_threshold=0.6)
    assert [r["id"] for r in kept] == ["a", "a-cf", "d"]
    assert report.exact == [{"dropped": "b", "kept": "g1"}]
    assert [(n["dropped"], n["kept"]) for n in report.near] == [("c", "g1")]
    kept_without_near, _ = deduplicate(records, near_threshold=None)
    assert [r["id"] for r in kept_without_near] == ["a", "a-cf", "c", "d"]


def test_split_is_seeded_and_keeps_groups_whole():
    records = [{"id": f"r{i}", "text": f"t{i}", "meta": {"group": f"g{i // 2}"}} for i in range(40)]
    train, validation = split(records, validation_fraction=0.25, seed=3)
    again = split(records, validation_fraction=0.25, seed=3)
    other = split(records, validation_fraction=0.25, seed=4)
    assert (train, validation) == again and validation != other[1]
    assert len(validation) == 10 and len(train) == 30
    groups = lambda rows: {r["meta"]["group"] for r in rows}  # noqa: E731
    assert not groups(train) & groups(validation)


def test_finalize_writes_splits_and_a_card_that_matches_them(tmp_path):
    records = [chat(f"Tell me about topic {i} please", f"Here is a short answer number {i} about it.",
                    kind="original", attributes={"gender": "female" if i % 3 else "male"}, group=f"g{i}")
               for i in range(30)]
    records.append(dict(records[0]))   # exact duplicate, dropped
    result = finalize(records, name="demo", builder="test", sources=[], settings={"x": 1}, out=tmp_path / "out",
                      validation_fraction=0.2, seed=1, guard=GuardSettings(enabled=False),
                      term_counter=lambda texts: {"words": {"n": sum(len(t.split()) for t in texts)}})
    out = tmp_path / "out"
    card = json.loads((out / "data_card.json").read_text())
    train, validation = read_records(out / "train.jsonl"), read_records(out / "validation.jsonl")
    assert card["splits"]["train"]["records"] == len(train) == len(result.train)
    assert card["splits"]["validation"]["records"] == len(validation) == 6
    assert card["steps"]["built"] == 31 and card["steps"]["after dedup"] == 30
    assert len(card["deduplication"]["exact"]) == 1
    after = card["counts"]["after"]["attributes"]["gender"]
    assert after == {"female": 20, "male": 10}
    assert card["counts"]["train"]["records"] + card["counts"]["validation"]["records"] == 30
    assert card["counts"]["before"]["terms"]["words"]["n"] > card["counts"]["after"]["terms"]["words"]["n"]
    markdown = (out / "data_card.md").read_text()
    assert "# Data card: demo" in markdown and "| female | 20 | 66.7% |" in markdown


def test_finalize_refuses_a_non_empty_out_dir_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputError):
        finalize([{"text": "a b c"}], name="n", builder="b", sources=[], settings={}, out=out,
                 guard=GuardSettings(enabled=False))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
