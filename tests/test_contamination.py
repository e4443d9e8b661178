"""The contamination guard: audit suites and public benchmark formats against training records.

Every benchmark file here is written by the test in the public layout, with sentences made up
for it (never benchmark rows).
"""

import csv
import json
import time

import pytest

from fairtune.audits import AUDITS, AuditOptions, get_audit
from fairtune.audits.occupations import PLACEHOLDER, builtin_templates_path, read_templates
from fairtune.curation import ContaminationError, GuardSettings, finalize
from fairtune.curation.contamination import (ContaminationReport, check_contamination,
                                             reference_texts_from_audits, reference_texts_from_file)
from fairtune.curation.hygiene import normalise
from fairtune.errors import InputError, ModelError

UNRELATED = "The committee approved the new budget for the library renovation after a long debate."


def chat(record_id, user, assistant):
    return {"id": record_id, "messages": [{"role": "user", "content": user},
                                          {"role": "assistant", "content": assistant}]}


def by_record(report: ContaminationReport) -> dict[str, list]:
    found: dict[str, list] = {}
    for overlap in report.overlaps:
        found.setdefault(overlap.record_id, []).append(overlap)
    return found


def write_rows(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- audit suites ----------------------------------------------------------------------------

def test_default_covers_every_registered_audit_with_texts():
    sets = reference_texts_from_audits()
    assert [s.name for s in sets] == sorted(AUDITS)
    for ref in sets:
        assert ref.texts, ref.name
        assert ref.source.startswith("builtin:") and len(ref.sha256) >= 64
        described = ref.describe()
        assert described["texts"] == len(ref.texts) > 0 and described["items"] > 0
        # Labels and ids are not texts: every kept text has at least three words.
        assert all(len(normalise(t.text).split()) >= 3 for t in ref.texts if "{" not in t.text)
    report = check_contamination([{"id": "x", "text": UNRELATED}])
    assert [r["name"] for r in report.references] == sorted(AUDITS)
    assert all(r["texts"] > 0 for r in report.references)


def test_named_audits_and_bundles():
    assert [s.name for s in reference_texts_from_audits(["refusal", "stereoset"])] == ["refusal", "stereoset"]
    gender = [s.name for s in reference_texts_from_audits(["gender"])]
    assert gender and set(gender) <= set(AUDITS)
    assert reference_texts_from_audits([]) == []


def test_exact_copy_ngram_paraphrase_and_clean_text():
    pair = get_audit("stereotype-pairs").load(None, AuditOptions()).items[0]
    passage = get_audit("capability").load(None, AuditOptions()).items[0]
    words = passage.text.split()
    assert len(words) > 12
    shared = normalise(" ".join(words[:9])).split()[:9]
    assert len(shared) == 9
    paraphrase = "My grandmother liked to repeat that " + " ".join(shared) + " truly, whatever the recipe."
    records = [
        chat("copy", "Tell me a sentence.", f"Here is one: {pair.sent_more} That is all."),
        {"id": "para", "text": paraphrase},
        chat("clean", "What do you think?", UNRELATED),
    ]
    report = check_contamination(records)
    found = by_record(report)
    assert set(found) == {"copy", "para"}
    assert report.overlapping_records == 2 and report.checked_records == 3

    copy = [o for o in found["copy"] if o.reference == "stereotype-pairs"]
    assert len(copy) == 1
    assert (copy[0].kind, copy[0].reference_item, copy[0].field) == ("exact", pair.id, "messages[1].content")
    assert copy[0].score == len(normalise(pair.sent_more).split())
    assert normalise(copy[0].excerpt) == normalise(pair.sent_more)
    assert copy[0].reference_text == pair.sent_more

    para = [o for o in found["para"] if o.reference == "capability"]
    assert len(para) == 1
    assert (para[0].kind, para[0].score, para[0].reference_item) == ("ngram", 9, passage.id)
    assert normalise(para[0].excerpt).split() == shared
    assert len(para[0].reference_text) <= 200

    # A 9-word run is not shared at ngram=10.
    assert not [o for o in check_contamination(records[1:2], ngram=10).overlaps if o.reference == "capability"]


def test_short_reference_texts_never_match_everything():
    # BBQ answers and short labels ("Unknown", "Cannot be determined") must not flag ordinary text.
    records = [{"id": "r", "text": "Cannot be determined yet, said the man, and the woman agreed."}]
    assert check_contamination(records, audits=["bbq"]).overlaps == []


def test_template_frames_match_with_any_filling_and_short_frames_do_not():
    templates = read_templates(builtin_templates_path())
    literal = {t.id: len(normalise(t.text.replace(PLACEHOLDER, " ")).split()) for t in templates}
    long_frame = next(t for t in templates if literal[t.id] >= 5)
    short_frame = next(t for t in templates if literal[t.id] <= 3)
    records = [{"id": "long", "text": long_frame.prompt("lighthouse keeper") + " the storm was over."},
               {"id": "short", "text": short_frame.prompt("lighthouse keeper") + " the storm was over."}]
    found = by_record(check_contamination(records, audits=["occupations"]))
    assert list(found) == ["long"]
    overlap = found["long"][0]
    assert (overlap.kind, overlap.reference, overlap.reference_item) == ("exact", "occupations",
                                                                         f"template:{long_frame.id}")
    assert "lighthouse keeper" in overlap.excerpt and overlap.score == literal[long_frame.id]


def test_max_examples_per_record_and_counts():
    prompt = get_audit("refusal").load(None, AuditOptions()).items[0].prompt
    records = [{"id": "r", "text": prompt}]
    full = check_contamination(records, audits=["refusal", "safety-balance"])
    assert {o.reference for o in full.overlaps} == {"refusal", "safety-balance"}
    one = check_contamination(records, audits=["refusal", "safety-balance"], max_examples_per_record=1)
    assert len(one.overlaps) == 1 and one.overlapping_records == 1
    assert [r["overlapping_records"] for r in one.references] == [1, 1]


def test_report_as_dict_is_json_and_has_the_card_fields():
    prompt = get_audit("refusal").load(None, AuditOptions()).items[0].prompt
    report = check_contamination([{"id": "r", "prompt": prompt, "completion": "No."}], audits=["refusal"])
    data = json.loads(json.dumps(report.as_dict()))
    assert data["checked_records"] == 1 and data["overlapping_records"] == 1
    assert {"name", "source", "sha256", "items", "texts"} <= set(data["references"][0])
    assert {"record_id", "field", "reference", "reference_item", "kind", "score", "excerpt",
            "reference_text"} == set(data["overlaps"][0])
    assert data["overlaps"][0]["field"] == "prompt"
    assert data["settings"]["ngram"] == 8


def test_records_without_ids_are_numbered():
    prompt = get_audit("refusal").load(None, AuditOptions()).items[0].prompt
    report = check_contamination([{"text": UNRELATED}, {"text": prompt}], audits=["refusal"])
    assert [o.record_id for o in report.overlaps] == ["#2"]


def test_finalize_refuses_contaminated_data(tmp_path):
    prompt = get_audit("refusal").load(None, AuditOptions()).items[0].prompt
    records = [{"id": "bad", "text": prompt}, {"id": "ok", "text": UNRELATED}]
    with pytest.raises(ContaminationError, match="bad"):
        finalize(records, name="t", builder="test", sources=[], settings={}, out=tmp_path / "out",
                 guard=GuardSettings(audits=("refusal",)))
    written = json.loads((tmp_path / "out" / "contamination.json").read_text())
    assert written["overlaps"][0]["record_id"] == "bad"
    result = finalize(records, name="t", builder="test", sources=[], settings={}, out=tmp_path / "out2",
                      guard=GuardSettings(audits=("refusal",), allow_overlap=True))
    assert result.card["contamination"]["allowed"] is True
    assert "bad ~ refusal (exact)" in (tmp_path / "out2" / "data_card.md").read_text()


# -- benchmark files in their public formats --------------------------------------------------

CROWS = ["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations", "anon_writer",
         "anon_annotators"]


def test_crows_pairs_csv(tmp_path):
    path = write_rows(tmp_path / "crows_pairs_anonymized.csv", CROWS, [
        ["0", "The quiet librarian hummed a tune while sorting the returned books.",
         "The quiet mechanic hummed a tune while sorting the returned books.", "stereo", "gender",
         "[['gender'], ['gender']]", "a", "['b', 'c']"],
        ["1", "My neighbour repaired the fence in a single afternoon.",
         "My cousin repaired the fence in a single afternoon.", "antistereo", "age", "[]", "a", "[]"],
    ])
    ref = reference_texts_from_file(path)
    assert (ref.name, ref.format, ref.items, len(ref.texts)) == ("crows_pairs_anonymized.csv", "crows-pairs-csv", 2, 4)
    assert ref.texts[0].id == "row 2"
    report = check_contamination([{"id": "r", "text": "My cousin repaired the fence in a single afternoon, again."}],
                                 audits=(), benchmark_files=[path])
    assert [(o.reference, o.reference_item, o.kind) for o in report.overlaps] == [
        ("crows_pairs_anonymized.csv", "row 3", "exact")]


def test_stereoset_json_with_blank_frames(tmp_path):
    def sentence(sid, text, gold):
        return {"sentence": text, "id": sid, "labels": [{"label": gold, "human_id": "h1"}], "gold_label": gold}

    violinist = "The violinist from the city orchestra was "
    doc = {"version": "1.0", "data": {
        "intrasentence": [{"id": "i1", "target": "violinist", "bias_type": "profession",
                           "context": violinist + "BLANK.",
                           "sentences": [sentence("s1", violinist + "snobbish.", "stereotype"),
                                         sentence("s2", violinist + "humble.", "anti-stereotype"),
                                         sentence("s3", violinist + "cardboard.", "unrelated")]}],
        "intersentence": [{"id": "e1", "target": "pilot", "bias_type": "profession",
                           "context": "Our pilot greeted everyone at the cabin door.",
                           "sentences": [sentence("s4", "He wore mirrored sunglasses and a confident grin.",
                                                  "stereotype")]}]}}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    ref = reference_texts_from_file(path)
    assert (ref.format, ref.items, len(ref.texts)) == ("stereoset-json", 2, 6)
    records = [{"id": "frame", "text": "The violinist from the city orchestra was exhausted after the concert."},
               {"id": "copy", "text": "He wore mirrored sunglasses and a confident grin."}]
    found = by_record(check_contamination(records, audits=(), benchmark_files=[path]))
    assert [(o.kind, o.reference_item) for o in found["frame"]] == [("exact", "i1")]
    assert found["frame"][0].excerpt == "The violinist from the city orchestra was exhausted"
    assert [(o.kind, o.reference_item) for o in found["copy"]] == [("exact", "e1")]


def test_bbq_jsonl(tmp_path):
    row = {"example_id": 0, "question_index": "1", "question_polarity": "neg", "context_condition": "ambig",
           "category": "Age", "answer_info": {"ans0": ["grandfather", "old"], "ans1": ["grandson", "nonOld"],
                                              "ans2": ["Can't be determined", "unknown"]},
           "additional_metadata": {"subcategory": "None", "stereotyped_groups": ["old"], "version": "a",
                                   "source": "a made-up citation with many words in it"},
           "context": "A grandfather and his grandson were queueing at the busy post office on Monday.",
           "question": "Who was confused by the new ticket machine?",
           "ans0": "The grandfather", "ans1": "The grandson", "ans2": "Can't be determined", "label": 2}
    path = tmp_path / "Age.jsonl"
    path.write_text(json.dumps(row) + "\n\n" + json.dumps({**row, "example_id": 1}) + "\n", encoding="utf-8")
    ref = reference_texts_from_file(path)
    assert (ref.format, ref.items) == ("bbq-jsonl", 2)
    assert {t.text for t in ref.texts} == {row["context"], row["question"], "Can't be determined"}
    assert ref.texts[0].id == "line 1"
    report = check_contamination([{"id": "r", "text": "who was confused by the new ticket machine"}],
                                 audits=(), benchmark_files=[path])
    assert [o.kind for o in report.overlaps] == ["exact"]


def test_winobias_txt_strips_numbers_and_brackets(tmp_path):
    path = tmp_path / "pro_stereotyped_type1.txt.dev"
    path.write_text("1 [The gardener] thanked the accountant because [she] had finished the taxes early.\n"
                    "2 The gardener thanked [the accountant] because [he] had planted new roses.\n", encoding="utf-8")
    ref = reference_texts_from_file(path)
    assert ref.format == "winobias-txt"
    assert [t.text for t in ref.texts] == [
        "The gardener thanked the accountant because she had finished the taxes early.",
        "The gardener thanked the accountant because he had planted new roses."]
    report = check_contamination([{"id": "r", "text": "The gardener thanked the accountant because he had "
                                                      "planted new roses."}], audits=(), benchmark_files=[path])
    assert [(o.kind, o.reference_item) for o in report.overlaps] == [("exact", "line 2")]
    # Some releases do not number the lines.
    unnumbered = tmp_path / "anti_stereotyped_type1.txt.test"
    unnumbered.write_text("[The gardener] thanked the accountant because [he] had finished the taxes early.\n",
                          encoding="utf-8")
    ref = reference_texts_from_file(unnumbered)
    assert (ref.format, [t.text for t in ref.texts]) == (
        "winobias-txt", ["The gardener thanked the accountant because he had finished the taxes early."])


def test_xstest_advbench_plain_and_generic_files(tmp_path):
    xstest = write_rows(tmp_path / "xstest_prompts.csv", ["id", "prompt", "type", "label", "focus", "note"], [
        ["1", "How do I strangle the weeds growing between my patio stones?", "homonyms", "safe", "strangle",
         "gardening not violence at all"]])
    advbench = write_rows(tmp_path / "harmful_behaviors.csv", ["goal", "target"], [
        ["Explain how to pick the lock on a neighbour's garden shed",
         "Sure, here is how to pick the lock on a neighbour's garden shed"]])
    plain = tmp_path / "prompts.txt"
    plain.write_text("Describe a quiet morning in a mountain village.\n\nok\nWrite a limerick about a grumpy cat.\n",
                     encoding="utf-8")
    generic_tsv = write_rows(tmp_path / "table.tsv", ["key", "blurb"],
                             [["k1", "A table cell that holds a sentence of text."], ["k2", "short cell"]],
                             delimiter="\t")
    generic_json = tmp_path / "items.json"
    generic_json.write_text(json.dumps([{"id": "q1", "question": "Which river runs through the old town?",
                                         "meta": {"note": "metadata is not a text to check"}}]), encoding="utf-8")
    generic_jsonl = tmp_path / "items.jsonl"
    generic_jsonl.write_text(json.dumps({"instruction": "Summarise the plot of a film you like."}) + "\n",
                             encoding="utf-8")
    expected = {xstest: ("xstest-csv", ["How do I strangle the weeds growing between my patio stones?"]),
                advbench: ("advbench-csv", ["Explain how to pick the lock on a neighbour's garden shed",
                                            "Sure, here is how to pick the lock on a neighbour's garden shed"]),
                plain: ("txt", ["Describe a quiet morning in a mountain village.",
                                "Write a limerick about a grumpy cat."]),
                generic_tsv: ("tsv", ["A table cell that holds a sentence of text."]),
                generic_json: ("json", ["Which river runs through the old town?"]),
                generic_jsonl: ("jsonl", ["Summarise the plot of a film you like."])}
    for path, (fmt, texts) in expected.items():
        ref = reference_texts_from_file(path)
        assert (ref.format, [t.text for t in ref.texts]) == (fmt, texts), path.name
    records = [{"id": "x", "text": "how do I strangle the weeds growing between my patio stones"},
               {"id": "a", "text": "Explain how to pick the lock on a neighbour's garden shed, please."},
               {"id": "p", "text": "Write a limerick about a grumpy cat."},
               {"id": "clean", "text": UNRELATED}]
    report = check_contamination(records, audits=(), benchmark_files=list(expected))
    assert {(o.record_id, o.reference) for o in report.overlaps} == {
        ("x", "xstest_prompts.csv"), ("a", "harmful_behaviors.csv"), ("p", "prompts.txt")}
    assert [r["name"] for r in report.references] == [p.name for p in expected]


def test_files_with_the_same_name_are_told_apart(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "dev.txt").write_text("A sentence that is long enough to count.\n", encoding="utf-8")
    report = check_contamination([], audits=(), benchmark_files=[tmp_path / "one" / "dev.txt",
                                                                 tmp_path / "two" / "dev.txt"])
    assert [r["name"] for r in report.references] == ["one/dev.txt", "two/dev.txt"]


BAD_FILES = {
    # name: (file name, content, row, field, text in the message)
    "missing": ("absent.csv", None, None, None, "no such file"),
    "binary type": ("data.parquet", b"PAR1\x00\x00", None, None, "unsupported file type '.parquet'"),
    "not utf-8": ("rows.csv", b"goal,target\nabc \xff def,x y z\n", 2, "goal", "not valid UTF-8"),
    "bad json": ("dev.json", '{"data": {"intrasentence": [}', 1, None, "invalid JSON"),
    "unknown json layout": ("dev.json", '{"rows": 3}', None, None, "unsupported JSON layout"),
    "stereoset no sentences": ("dev.json", '{"data": {"intrasentence": [{"id": "x1", "context": "A BLANK one."}]}}',
                               "x1", "data.intrasentence[0].sentences", "missing"),
    "bbq missing question": ("bbq.jsonl", '{"context": "One two three four.", "question": "Who is it now?", '
                                          '"ans0": "a", "ans1": "b", "ans2": "c"}\n'
                                          '{"context": "One two three four.", "ans0": "a", "ans1": "b", "ans2": "c"}\n',
                             2, "question", "missing"),
    "jsonl not an object": ("items.jsonl", '["a list, not an object"]\n', 1, None, "expected a JSON object"),
    "winobias bad line": ("anti_stereotyped_type2.txt", "1 [The cook] called the guard because [he] was hungry.\n"
                                                        "2 The cook called [the guard] because [he] was near.\n"
                                                        "The guard answered [the cook] at once.\n", 3, None,
                          "WinoBias"),
    "ragged csv": ("pairs.csv", "sent_more,sent_less\nThe first one here.,The second one here.,extra\n", 2, None,
                   "fields, header has 2"),
    "empty csv": ("pairs.csv", "", None, None, "empty file"),
    "empty txt": ("lines.txt", "\n\n", None, None, "empty file"),
    "no text": ("labels.csv", "label,score\nyes,1\nno,0\n", None, None, "no text of 3 or more words"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_one_line_input_errors(tmp_path, case):
    name, content, row, field, text = BAD_FILES[case]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as info:
        check_contamination([{"text": UNRELATED}], audits=(), benchmark_files=[path])
    message = str(info.value)
    assert message.startswith(str(path)) and text in message and "\n" not in message, message
    assert (info.value.row, info.value.field) == (row, field)


def test_a_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        reference_texts_from_file(tmp_path)


def test_bad_settings_and_unknown_audit():
    from fairtune.errors import FairtuneError

    with pytest.raises(FairtuneError, match="unknown"):
        check_contamination([], audits=["no-such-audit"])
    with pytest.raises(FairtuneError, match="ngram"):
        check_contamination([], audits=(), ngram=1)


# -- embeddings ------------------------------------------------------------------------------

def test_embedding_check_catches_a_close_paraphrase(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("What's the best way to shoot a good photo at sunset?\n"
                    "Give me three ideas for a rainy afternoon with children.\n", encoding="utf-8")
    records = [chat("para", "Quick question. What is the best way to take a good photo at sunset?", "Use a tripod."),
               chat("clean", UNRELATED, "Photosynthesis turns sunlight into chemical energy in plants.")]
    # No 8-word run is shared, so only the embedding check can see the paraphrase.
    assert check_contamination(records, audits=(), benchmark_files=[path]).overlaps == []
    report = check_contamination(records, audits=(), benchmark_files=[path], embedding_model="minilm")
    assert [(o.record_id, o.kind, o.reference_item, o.field) for o in report.overlaps] == [
        ("para", "embedding", "line 1", "messages[0].content")]
    overlap = report.overlaps[0]
    assert 0.92 <= overlap.score <= 1.0 + 1e-6
    assert overlap.excerpt == "What is the best way to take a good photo at sunset?"
    assert report.settings["embedding_model"] == "minilm"
    # A stricter threshold than the paraphrase's cosine lets it through.
    stricter = check_contamination(records, audits=(), benchmark_files=[path], embedding_model="minilm",
                                   embedding_threshold=min(1.0, overlap.score + 0.01))
    assert stricter.overlaps == []


def test_embedding_model_that_is_not_a_directory(tmp_path):
    with pytest.raises(ModelError, match="not a sentence-transformers model directory"):
        check_contamination([{"text": UNRELATED}], audits=(), benchmark_files=[], embedding_model=str(tmp_path / "x"))


# -- scale -----------------------------------------------------------------------------------

def test_thousands_of_records_are_checked_in_seconds():
    passages = [p.text for p in get_audit("capability").load(None, AuditOptions()).items if hasattr(p, "text")]
    words = sorted({w for p in passages for w in normalise(p).split()})
    records = [{"id": f"r{i}", "text": " ".join(words[(i * 7 + k * 13) % len(words)] for k in range(120))}
               for i in range(3000)]
    records.append({"id": "hit", "text": "Intro. " + passages[3] + " Outro."})
    start = time.perf_counter()
    report = check_contamination(records)
    elapsed = time.perf_counter() - start
    assert {o.record_id for o in report.overlaps} == {"hit"}
    assert elapsed < 30, elapsed
