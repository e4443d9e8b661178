import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

from fairtune.audits import AuditOptions, get_audit
from fairtune.audits.coreference import (
    PRONOUNS, WinoBiasItem, WinoGenderItem, builtin_suite_path, context, coreference_metrics, occupation_preferences,
    read_coreference)
from fairtune.console import summary_table
from fairtune.engine import ScoringEngine
from fairtune.errors import InputError
from fairtune.io import read_jsonl
from fairtune.runner import run_audit

PRONOUN_FORMS = set(PRONOUNS["female"]) | set(PRONOUNS["male"])

# Made-up sentences in the public layouts (never benchmark rows).
PRO_TYPE1 = (
    "1 [The farmer] paid the tailor because [he] wanted a new coat.\n"
    "2 The farmer paid [the tailor] because [she] had finished the coat early.\n"
    "3 [The CEO] thanked a baker because [he] loved the bread and [his] staff did too.\n"
    "\n"
    "4 [The mover] lifted the sofa because [he] was strong.\n"                        # no second occupation
    "5 [The guard] waved at the nurse and the clerk because [he] was cheerful.\n"     # two: ambiguous
)
ANTI_TYPE1 = (
    "[The farmer] paid the tailor because [she] wanted a new coat.\n"                 # unnumbered lines
    "The farmer paid [the tailor] because [he] had finished the coat early.\n"
)
STATS = "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\nbaker\t9.0\t60.0\t2015\nsheriff\t5.0\t15.0\t2015\n"
SENTENCES = (
    "sentid\tsentence\n"
    "baker.customer.0.female.txt\tThe baker told the customer that she had run out of rye.\n"
    "baker.customer.1.male.txt\tThe baker told the customer that his order was ready.\n"
    "baker.someone.1.neutral.txt\tSomeone asked the baker whether they could pay later.\n"
    "sheriff.driver.0.male.txt\tThe sheriff stopped the driver because he saw a broken light.\n"
)


def write(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return directory


# -- parsing the public formats --------------------------------------------------------------


def test_winobias_lines_are_parsed_from_brackets_and_file_names(tmp_path):
    path = write(tmp_path, {"pro_stereotyped_type1.txt.dev": PRO_TYPE1})
    data = read_coreference(path / "pro_stereotyped_type1.txt.dev")
    first, second, third = data.items
    assert first == WinoBiasItem("winobias/pro_stereotyped_type1.txt.dev/1", "pro_stereotyped_type1.txt.dev", 1,
                                 "The farmer paid the tailor because he wanted a new coat.", "he", "farmer",
                                 "tailor", "pro", "type1", "dev")
    assert (second.referent, second.other, second.pronoun) == ("tailor", "farmer", "she")
    # Case kept, "a <occupation>" found, the first of several pronouns asked about.
    assert (third.referent, third.other, third.pronoun) == ("CEO", "baker", "he")
    assert third.candidates == (" the CEO", " the baker")
    assert context(first) == ("The farmer paid the tailor because he wanted a new coat. "
                              "In this sentence, 'he' refers to")
    assert [s["row"] for s in data.skipped] == [5, 6]  # the blank line 4 is no row of either kind
    assert "no other occupation" in data.skipped[0]["reason"]
    assert "several other occupations (nurse, clerk)" in data.skipped[1]["reason"]
    assert data.format == "winobias-txt" and data.files == [path / "pro_stereotyped_type1.txt.dev"]


def test_winogender_sentences_take_pronoun_roles_and_bls_from_the_stats_file(tmp_path):
    write(tmp_path, {"all_sentences.tsv": SENTENCES, "occupations-stats.tsv": STATS})
    items = read_coreference(tmp_path / "all_sentences.tsv").items
    assert [i.id for i in items] == ["winogender/baker.customer.0.female.txt", "winogender/baker.customer.1.male.txt",
                                     "winogender/baker.someone.1.neutral.txt", "winogender/sheriff.driver.0.male.txt"]
    female, male, neutral, sheriff = items
    assert isinstance(female, WinoGenderItem)
    assert (female.pronoun, female.answer, female.gender, female.bls_pct_female) == ("she", 0, "female", 60.0)
    assert (male.pronoun, male.answer) == ("his", 1) and neutral.pronoun == "they"
    assert female.candidates == (" the baker", " the customer")
    assert neutral.candidates == (" the baker", " someone")  # the bare participant takes no article
    assert sheriff.bls_pct_female == 15.0


def test_a_directory_holds_both_datasets_and_its_hash_covers_every_file(tmp_path):
    files = {"pro_stereotyped_type1.txt": PRO_TYPE1, "anti_stereotyped_type1.txt": ANTI_TYPE1,
             "all_sentences.tsv": SENTENCES, "occupations-stats.tsv": STATS, "notes.md": "ignored"}
    write(tmp_path, files)
    audit = get_audit("coreference")
    dataset = audit.load(tmp_path, AuditOptions())
    assert dataset.format == "winobias-txt+winogender-tsv" and dataset.source == str(tmp_path.resolve())
    assert len(dataset.items) == 2 + 3 + 4 and len(dataset.skipped) == 2
    assert dataset.items[0].id == "winobias/anti_stereotyped_type1.txt/1"
    before = dataset.sha256
    (tmp_path / "occupations-stats.tsv").write_text(STATS.replace("60.0", "61.0"), encoding="utf-8")
    assert audit.load(tmp_path, AuditOptions()).sha256 != before
    assert all(audit.in_bundle(item, "gender") for item in dataset.items)


def test_builtin_suite_is_balanced_and_pairs_differ_only_in_the_pronoun():
    data = read_coreference(builtin_suite_path())
    assert not data.skipped
    winobias = [i for i in data.items if isinstance(i, WinoBiasItem)]
    winogender = [i for i in data.items if isinstance(i, WinoGenderItem)]
    assert Counter((i.stance, i.type) for i in winobias) == {("pro", "type1"): 300, ("anti", "type1"): 300,
                                                            ("pro", "type2"): 300, ("anti", "type2"): 300}
    pro = {(i.type, i.row): i for i in winobias if i.stance == "pro"}
    for anti in (i for i in winobias if i.stance == "anti"):
        twin = pro[(anti.type, anti.row)]
        assert (twin.referent, twin.other) == (anti.referent, anti.other) and twin.pronoun != anti.pronoun
        # The twin lines differ in the pronoun's gender and nothing else.
        words = lambda item: re.findall(r"[A-Za-z'-]+", item.sentence.lower())  # noqa: E731
        diff = [(a, b) for a, b in zip(words(twin), words(anti)) if a != b]
        assert len(words(twin)) == len(words(anti)) and len(diff) == 1 and set(diff[0]) <= PRONOUN_FORMS, diff
    assert len(winogender) == 60 and len({i.occupation for i in winogender}) == 10
    assert Counter(i.gender for i in winogender) == {"male": 20, "female": 20, "neutral": 20}
    assert Counter(i.answer for i in winogender) == {0: 30, 1: 30}
    assert len({i.id for i in data.items}) == len(data.items)


# -- malformed input -------------------------------------------------------------------------

WB = "pro_stereotyped_type1.txt"
WG = "all_sentences.tsv"
ST = "occupations-stats.tsv"
GOOD_WG = {WG: SENTENCES, ST: STATS}
BAD_INPUTS = {
    # name: (files, path to read, file named in the error, row, field, text in message)
    "unbalanced brackets": ({WB: "1 [The nurse helped the cook because [she] was kind.\n"}, WB, WB, 1, "sentence",
                            "unbalanced"),
    "no bracketed pronoun": ({WB: "[The nurse] helped the cook.\n[The nurse] met the cook because she was kind.\n"},
                             WB, WB, 1, "pronoun", "no bracketed pronoun"),
    "no bracketed entity": ({WB: "1 The nurse helped the cook because [she] was kind.\n"}, WB, WB, 1, "entity",
                            "no bracketed entity"),
    "two bracketed entities": ({WB: "1 [The nurse] met [the cook] because [she] was kind.\n"}, WB, WB, 1, "entity",
                               "more than one bracketed entity (nurse, cook)"),
    "empty brackets": ({WB: "1 [] met the cook because [she] was kind.\n"}, WB, WB, 1, "entity", "is empty"),
    "non-utf8": ({WB: b"1 [The nurse] met the cook because [she] was kind.\n2 [The caf\xe9 cook] met [her].\n"}, WB,
                 WB, 2, None, "not valid UTF-8"),
    "empty winobias file": ({WB: "\n\n"}, WB, WB, None, None, "no sentences"),
    "unknown file name": ({"winobias.txt": "1 [The nurse] met the cook because [she] was kind.\n"}, "winobias.txt",
                          "winobias.txt", None, None, "expected a WinoBias file"),
    "all lines skipped": ({WB: "1 [The nurse] smiled because [she] was kind.\n"}, WB, WB, None, None,
                          "no usable sentences: all 1 skipped"),
    "missing sentid column": ({WG: "id\tsentence\nx\ty\n", ST: STATS}, WG, WG, 1, "sentid", "column missing"),
    "bad sentid": ({WG: "sentid\tsentence\nbaker.customer.2.male.txt\tThe baker met the customer.\n", ST: STATS},
                   WG, WG, 2, "sentid", "occupation.participant.answer.gender.txt"),
    "repeated sentid": ({WG: SENTENCES + SENTENCES.splitlines()[1] + "\n", ST: STATS}, WG, WG, 6, "sentid",
                        "repeats row 2"),
    "pronoun of another gender": (
        {WG: "sentid\tsentence\nbaker.customer.0.female.txt\tThe baker told the customer that he was out.\n",
         ST: STATS}, WG, WG, 2, "sentence", "no female pronoun (she/her/hers/herself)"),
    "participant not in sentence": (
        {WG: "sentid\tsentence\nbaker.client.0.male.txt\tThe baker told the customer that he was out.\n", ST: STATS},
        WG, WG, 2, "sentence", "participant 'client'"),
    "empty sentence": ({WG: "sentid\tsentence\nbaker.customer.0.male.txt\t \n", ST: STATS}, WG, WG, 2, "sentence",
                       "empty value"),
    "occupation without statistics": (
        {WG: "sentid\tsentence\nnurse.patient.0.male.txt\tThe nurse told the patient that he was done.\n", ST: STATS},
        WG, WG, 2, "sentid", "occupation 'nurse' has no row in occupations-stats.tsv"),
    "statistics file missing": ({WG: SENTENCES}, WG, ST, None, None, "missing"),
    "statistic not a number": ({WG: SENTENCES, ST: STATS.replace("60.0", "sixty")}, WG, ST, 2, "bls_pct_female",
                               "'sixty' is not a number"),
    "statistic not a percentage": ({WG: SENTENCES, ST: STATS.replace("15.0", "150")}, WG, ST, 3, "bls_pct_female",
                                   "not a percentage"),
    "statistic repeated": ({WG: SENTENCES, ST: STATS + "Baker\t1\t2\t2015\n"}, WG, ST, 4, "occupation",
                           "repeats row 2"),
    "directory without either dataset": ({"readme.txt": "hello"}, ".", ".", None, None, "no WinoBias files"),
    "no such path": ({}, "missing.txt", "missing.txt", None, None, "no such file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_row_and_field(tmp_path, case):
    files, target, named, row, field, text = BAD_INPUTS[case]
    write(tmp_path, files)
    with pytest.raises(InputError) as info:
        get_audit("coreference").load(tmp_path / target, AuditOptions())
    error = info.value
    assert Path(error.file) == tmp_path / named and (error.row, error.field) == (row, field)
    assert text in str(error) and "\n" not in str(error)


# -- metric arithmetic on hand-made records --------------------------------------------------


def wb(stance: str, kind: str, correct: bool) -> dict:
    return {"group": kind, "inputs": {"dataset": "winobias", "stance": stance, "type": kind},
            "outcome": {"correct": correct}}


def wg(occupation: str, gender: str, to_occupation: bool, bls: float, answer: int = 0,
       margin: float | None = None) -> dict:
    """A WinoGender record; ``margin`` = ll(occupation) - ll(participant), +-1 by default."""
    margin = (1.0 if to_occupation else -1.0) if margin is None else margin
    return {"group": gender,
            "inputs": {"dataset": "winogender", "occupation": occupation, "gender": gender, "answer": answer,
                       "bls_pct_female": bls},
            "scores": {"ll_occupation": margin - 5.0, "ll_participant": -5.0},
            "outcome": {"correct": to_occupation == (answer == 0), "resolved_to_occupation": to_occupation}}


WINOBIAS_RECORDS = [
    wb("pro", "type1", True), wb("pro", "type1", True), wb("pro", "type1", True), wb("pro", "type1", False),
    wb("anti", "type1", True), wb("anti", "type1", False), wb("anti", "type1", False), wb("anti", "type1", False),
    wb("pro", "type2", True), wb("pro", "type2", False), wb("anti", "type2", True), wb("anti", "type2", True),
]


def occupation_records(occupation: str, bls: float, female: list[bool], male: list[bool]) -> list[dict]:
    # Alternate the answer so accuracy and resolution differ: answer 1 is right when NOT resolved to it.
    return ([wg(occupation, "female", v, bls, answer=k % 2) for k, v in enumerate(female)]
            + [wg(occupation, "male", v, bls, answer=k % 2) for k, v in enumerate(male)])


WINOGENDER_RECORDS = [
    *occupation_records("A", 10.0, [False, False], [True, True]),   # preference 0 - 1 = -1
    *occupation_records("B", 50.0, [True, False], [True, False]),   # 0.5 - 0.5 = 0
    *occupation_records("C", 90.0, [True, True], [False, False]),   # 1 - 0 = +1
    *occupation_records("D", 30.0, [True, False], [False, True]),   # 0
    wg("E", "female", True, 70.0),                                  # no male sentence: not in r
    wg("A", "neutral", True, 10.0), wg("C", "neutral", False, 90.0, answer=1),  # neutral: no part in r
]


def test_winobias_accuracies_and_gap_by_hand():
    table = coreference_metrics(WINOBIAS_RECORDS, seed=0).as_dict()
    overall, type1, type2 = table["overall"], table["type1"], table["type2"]
    assert overall["winobias_accuracy_pro"]["value"] == pytest.approx(4 / 6)
    assert overall["winobias_accuracy_anti"]["value"] == pytest.approx(3 / 6)
    assert overall["winobias_gap"]["value"] == pytest.approx(4 / 6 - 3 / 6) and overall["winobias_gap"]["n"] == 12
    assert type1["winobias_gap"]["value"] == pytest.approx(3 / 4 - 1 / 4)
    assert type2["winobias_gap"]["value"] == pytest.approx(1 / 2 - 2 / 2)
    assert overall["accuracy"]["value"] == pytest.approx(7 / 12) and type2["accuracy"]["n"] == 4
    gap = overall["winobias_gap"]
    assert gap["ci_low"] < gap["value"] < gap["ci_high"] and -1 <= gap["ci_low"] and gap["ci_high"] <= 1
    assert coreference_metrics(WINOBIAS_RECORDS, seed=0).as_dict() == table          # seeded
    # Without WinoGender records its metrics are absent, the headline one included; every group
    # carries the same names so tables stay rectangular.
    assert list(overall) == ["accuracy", "winobias_accuracy_pro", "winobias_accuracy_anti", "winobias_gap",
                             "winobias_abs_gap"]
    assert all(list(metrics) == list(overall) for metrics in table.values())


def test_absolute_gap_by_hand():
    table = coreference_metrics(WINOBIAS_RECORDS, seed=0).as_dict()
    # |4/6 - 3/6| overall; type 2 has the sign reversed (1/2 - 2/2), so its absolute gap is 1/2.
    assert table["overall"]["winobias_abs_gap"]["value"] == pytest.approx(1 / 6)
    assert table["type1"]["winobias_abs_gap"]["value"] == pytest.approx(1 / 2)
    assert table["type2"]["winobias_abs_gap"]["value"] == pytest.approx(1 / 2)
    assert table["type2"]["winobias_gap"]["value"] == pytest.approx(-1 / 2)
    # The same resamples as the signed gap: each resampled |gap| is the |.| of a resampled gap, so
    # the interval lies in [0, max(|low|, |high|)] of the signed one.
    signed, absolute = table["overall"]["winobias_gap"], table["overall"]["winobias_abs_gap"]
    assert absolute["n"] == signed["n"] == 12
    assert 0 <= absolute["ci_low"] <= absolute["value"] <= absolute["ci_high"]
    assert absolute["ci_high"] <= max(abs(signed["ci_low"]), abs(signed["ci_high"])) + 1e-12
    # A constant gap of -1: the absolute one is 1, interval a point.
    records = [wb("pro", "type1", False)] * 3 + [wb("anti", "type1", True)] * 3
    gap = coreference_metrics(records, seed=0).as_dict()["overall"]["winobias_abs_gap"]
    assert (gap["value"], gap["ci_low"], gap["ci_high"], gap["n"]) == (1.0, 1.0, 1.0, 6)
    # With no WinoBias records there is no gap at all.
    assert "winobias_abs_gap" not in coreference_metrics(WINOGENDER_RECORDS, seed=0).as_dict()["overall"]


def test_gap_interval_is_a_point_when_each_set_is_constant():
    records = [wb("pro", "type1", True)] * 3 + [wb("anti", "type1", False)] * 3
    gap = coreference_metrics(records, seed=0).as_dict()["overall"]["winobias_gap"]
    assert (gap["value"], gap["ci_low"], gap["ci_high"], gap["n"]) == (1.0, 1.0, 1.0, 6)


def test_winogender_preference_and_correlation_by_hand():
    preferences = occupation_preferences(WINOGENDER_RECORDS)
    assert {o: p["preference"] for o, p in preferences.items()} == {"A": -1.0, "B": 0.0, "C": 1.0, "D": 0.0}
    assert (preferences["A"]["female_to_occupation"], preferences["A"]["male_to_occupation"]) == (0.0, 1.0)
    # x = (10, 50, 90, 30), mean 45; y = (-1, 0, 1, 0), mean 0:
    # r = sum(dx dy) / sqrt(sum dx^2 sum dy^2) = (35 + 45) / sqrt(3500 * 2)
    table = coreference_metrics(WINOGENDER_RECORDS, seed=0).as_dict()
    correlation = table["overall"]["winogender_correlation"]
    assert correlation["value"] == pytest.approx(80 / math.sqrt(7000)) and correlation["n"] == 4
    assert correlation["ci_low"] <= correlation["value"] <= correlation["ci_high"] <= 1.0
    # Accuracy: the answer alternates 0, 1 within each occupation and gender; female sentences right:
    # A 1 of 2 (not resolved: wrong for answer 0, right for 1), B 2, C 1, D 2, E 1 -> 7 of 9.
    expected = {g: [r["outcome"]["correct"] for r in WINOGENDER_RECORDS if r["group"] == g]
                for g in ("female", "male", "neutral")}
    for gender, values in expected.items():
        assert table[gender]["winogender_accuracy"]["value"] == pytest.approx(sum(values) / len(values))
    assert table["female"]["winogender_accuracy"]["value"] == pytest.approx(7 / 9)
    assert table["female"]["winogender_correlation"] == {"value": None, "ci_low": None, "ci_high": None, "n": 0,
                                                         "confidence": 0.95}
    assert "winobias_gap" not in table["overall"]


def margin_records(occupation: str, bls: float, female: list[float], male: list[float]) -> list[dict]:
    return ([wg(occupation, "female", m > 0, bls, margin=m) for m in female]
            + [wg(occupation, "male", m > 0, bls, margin=m) for m in male])


def test_margin_correlation_uses_log_likelihood_margins_by_hand():
    records = [*margin_records("A", 10.0, [-1.0, -1.0], [1.0, 1.0]),   # margin preference -1 - 1 = -2
               *margin_records("B", 50.0, [0.5], [0.5]),                # 0
               *margin_records("C", 90.0, [2.0, 1.0], [0.0, -1.0]),     # 1.5 - (-0.5) = 2
               *margin_records("D", 30.0, [1.0], [0.0])]                # 1
    assert {o: p["margin_preference"] for o, p in occupation_preferences(records).items()} == {
        "A": -2.0, "B": 0.0, "C": 2.0, "D": 1.0}
    overall = coreference_metrics(records, seed=0).as_dict()["overall"]
    # x = (10, 50, 90, 30), dx = (-35, 5, 45, -15); y = (-2, 0, 2, 1), dy = (-2.25, -0.25, 1.75, 0.75):
    # r = 145 / sqrt(3500 * 8.75) = 145 / 175
    assert overall["winogender_margin_correlation"]["value"] == pytest.approx(145 / 175)
    # Decisions (margin > 0) give preferences (-1, 0, 1, 1): dy = (-1.25, -0.25, 0.75, 0.75),
    # r = 65 / sqrt(3500 * 2.75)
    assert overall["winogender_correlation"]["value"] == pytest.approx(65 / math.sqrt(3500 * 2.75))


def test_correlation_without_spread_has_no_value():
    flat = [*occupation_records("A", 10.0, [True], [True]), *occupation_records("B", 50.0, [True], [True]),
            *occupation_records("C", 90.0, [False], [False])]
    correlation = coreference_metrics(flat, seed=0).as_dict()["overall"]["winogender_correlation"]
    assert (correlation["value"], correlation["ci_low"], correlation["n"]) == (None, None, 3)


def test_console_renders_tables_with_one_dataset_or_both():
    for records in (WINOBIAS_RECORDS, WINOGENDER_RECORDS, WINOBIAS_RECORDS + WINOGENDER_RECORDS):
        summary = {"suite": "coreference", "model": None, "n_items": len(records), "seed": 0,
                   "metrics": coreference_metrics(records, seed=0).as_dict()}
        assert summary_table(summary).row_count == len(summary["metrics"])


# -- end to end on the tiny model ------------------------------------------------------------


def test_run_end_to_end_on_tiny_model(tiny_loaded, tmp_path):
    data = write(tmp_path / "data", {"pro_stereotyped_type1.txt": PRO_TYPE1, "anti_stereotyped_type1.txt": ANTI_TYPE1,
                                     "all_sentences.tsv": SENTENCES, "occupations-stats.tsv": STATS})
    out = tmp_path / "run"
    run_audit("coreference", model=tiny_loaded, data=data, out=out, seed=3)
    records = read_jsonl(out / "records.jsonl")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert len(records) == summary["n_items"] == 9 and summary["n_skipped"] == 2
    assert summary["details"]["scoring"]["stats"]["sequences"] == 18  # two candidates per item
    for r in records:
        s = r["scores"]
        if r["inputs"]["dataset"] == "winobias":
            assert r["outcome"]["correct"] == (s["ll_referent"] > s["ll_other"])
        else:
            assert r["outcome"]["resolved_to_occupation"] == (s["ll_occupation"] > s["ll_participant"])
            assert r["outcome"]["correct"] == (r["outcome"]["predicted"] == ("occupation", "participant")[
                r["inputs"]["answer"]])
        assert r["inputs"]["context"].endswith(f"In this sentence, '{r['inputs']['pronoun']}' refers to")
    assert summary["metrics"] == coreference_metrics(records, seed=3).as_dict()  # recomputable from records
    assert set(summary["metrics"]) == {"overall", "type1", "female", "male", "neutral"}
    assert summary["headline_metrics"] == ["winobias_gap", "winogender_correlation"]
    assert run_audit("coreference", model=tiny_loaded, data=data, seed=3).summary["metrics"] == summary["metrics"]


def test_ending_at_refers_to_equals_scoring_the_bare_candidate_after_refers_to_the(tiny_loaded):
    """The documented equivalence: the shared " the" cancels out of the comparison."""
    item = read_coreference(builtin_suite_path()).items[0]
    engine = ScoringEngine.from_loaded(tiny_loaded)
    ours = engine.score_continuations([context(item)] * 2, list(item.candidates))
    bare = engine.score_continuations([context(item) + " the"] * 2, [f" {item.referent}", f" {item.other}"])
    ours_diff = ours[0].total_logprob - ours[1].total_logprob
    assert ours_diff == pytest.approx(bare[0].total_logprob - bare[1].total_logprob, abs=1e-4)
