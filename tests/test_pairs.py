"""``fairtune data pairs``: paired counterfactual data and neutral contexts for fairness objectives.

No model is needed: the builder fills our own frames and runs CDA on streamed text.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairtune.cli import app
from fairtune.curation import api
from fairtune.curation.build import GuardSettings
from fairtune.curation.cda import axis_values, term_counts
from fairtune.curation.hygiene import family_of, group_of, split
from fairtune.curation.pairs import (
    DOMAINS, builtin_records, corpus_records, data_dir, heading_level, load_terms, split_sentences,
)
from fairtune.curation.records import read_records, validate_record

runner = CliRunner()
NO_GUARD = GuardSettings(enabled=False)
WORD = re.compile(r"[\w-]+")


@pytest.fixture(scope="module")
def gender():
    return builtin_records("gender")


@pytest.fixture(scope="module")
def religion():
    return builtin_records("religion")


def groups_of(records):
    groups = defaultdict(list)
    for record in records:
        if record["meta"]["kind"] != "context":
            groups[record["meta"]["group"]].append(record)
    return groups


def attribute_words(axis):
    """Every word the axis's slots can write, split into tokens, plus the articles before them."""
    words = {"a", "an"}
    for rows in load_terms(axis).slots.values():
        for row in rows:
            for form in row:
                words.update(w.lower() for w in WORD.findall(form))
    return words


def differing_tokens(a: str, b: str) -> set[str]:
    left, right = WORD.findall(a.lower()), WORD.findall(b.lower())
    changed = set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, left, right, autojunk=False).get_opcodes():
        if tag != "equal":
            changed.update(left[i1:i2] + right[j1:j2])
    return changed


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# -- the built-in sources ------------------------------------------------------------------

def test_builtin_sizes_meet_the_targets_and_are_deterministic(gender, religion):
    assert len(groups_of(gender)) >= 2000 and len(groups_of(religion)) >= 1000
    assert sum(r["meta"]["kind"] == "context" for r in gender) >= 500
    for records in (gender, religion):
        domains = {r["meta"]["domain"] for r in records}
        assert domains == set(DOMAINS)
        for domain in DOMAINS:
            families = {r["meta"]["family"] for r in records if r["meta"]["domain"] == domain
                        and r["meta"]["kind"] != "context"}
            assert len(families) >= 7, domain
    gender_frames = defaultdict(set)
    for record in gender:
        gender_frames[(record["meta"]["domain"], record["meta"]["kind"])].add(record["meta"]["family"])
    for domain in DOMAINS:
        assert len(gender_frames[(domain, "template")]) >= 10 and len(gender_frames[(domain, "context")]) >= 20
    assert builtin_records("gender", domains=["sports"], seed=0) == builtin_records("gender", domains=["sports"])
    assert builtin_records("gender", domains=["sports"], seed=1) != builtin_records("gender", domains=["sports"])


@pytest.mark.parametrize("axis", ["gender", "religion"])
def test_every_group_differs_only_in_attribute_words_and_values(axis, gender, religion):
    records = gender if axis == "gender" else religion
    allowed = attribute_words(axis)
    values = axis_values(axis)
    for group, members in groups_of(records).items():
        assert len(members) >= 2, group
        assert sorted(m["meta"]["attributes"][axis] for m in members) == sorted(values), group
        assert len({m["meta"]["family"] for m in members}) == 1
        for member in members:
            validate_record(member)
            assert member["meta"]["kind"] == "template" and member["meta"]["axis"] == axis
            assert "loss" not in member
        first = members[0]["text"]
        for other in members[1:]:
            changed = differing_tokens(first, other["text"])
            assert changed and changed <= allowed, (first, other["text"], changed - allowed)


def test_cda_sees_each_member_as_its_own_gender(gender):
    """The frames' words are CDA's words: the data card's term counts and the pairs agree."""
    for members in list(groups_of(gender).values())[::7]:
        for member in members:
            counts = term_counts([member["text"]], ("gender",))["gender"]
            value = member["meta"]["attributes"]["gender"]
            other = "male" if value == "female" else "female"
            assert counts[value] >= 1 and counts[other] == 0, member["text"]


def test_gender_terms_are_in_the_cda_word_list():
    terms = load_terms("gender")
    for slot, rows in terms.slots.items():
        for row in rows:
            for value, word in zip(terms.values, row):
                sentence = f"{word} Okafor waved." if slot in ("name", "title") else f"They saw {word} there."
                counts = term_counts([sentence], ("gender",))["gender"]
                assert counts[value] >= 1, (slot, word)


@pytest.mark.parametrize("axis", ["gender", "religion"])
def test_contexts_are_neutral_loss_none_and_end_where_the_attribute_word_follows(axis, gender, religion):
    records = gender if axis == "gender" else religion
    contexts = [r for r in records if r["meta"]["kind"] == "context"]
    assert contexts
    for context in contexts[::5]:
        validate_record(context)
        assert context["loss"] == "none"
        info = context["meta"]
        assert {"axis", "domain", "family", "group", "next"} <= set(info) and info["axis"] == axis
        assert not re.search(r"[.!?]$", context["text"].strip()), context["text"]
        assert sum(term_counts([context["text"]], (axis,))[axis].values()) == 0, context["text"]
        for value, words in info["next"].items():
            assert words
            continued = f"{context['text']} {words[0]} went on."
            assert term_counts([continued], (axis,))[axis][value] >= 1, continued
        if axis == "gender":
            assert info.get("association", {"gender": "female"})["gender"] in ("female", "male")
        else:
            assert "association" not in info
    if axis == "gender":
        associations = {c["meta"].get("association", {}).get("gender") for c in contexts}
        assert {"female", "male", None} <= associations
        pronoun = [c for c in contexts if c["meta"]["next"] == {"female": ["she"], "male": ["he"]}]
        assert len(pronoun) >= 200


def test_training_occupations_are_disjoint_from_the_audit_occupations():
    audits = Path(__file__).resolve().parents[1] / "src" / "fairtune" / "audits" / "data"
    with open(audits / "occupations.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    audit_names = {r["occupation"].strip().lower() for r in rows}
    audit_titles = {r["bls_title"].strip().lower() for r in rows}
    audit_names |= {line.strip().lower() for line in (audits / "coreference_occupations.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    with open(data_dir() / "occupations.tsv", encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    training = list(csv.DictReader(lines, delimiter="\t"))
    assert len(training) >= 40 and {r["lean"] for r in training} == {"female", "male", "neutral"}

    def contains(longer: str, shorter: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(shorter)}(?![\w-])", longer) is not None

    for row in training:
        name = row["occupation"].lower()
        assert name not in audit_names, name
        assert not [a for a in audit_names if contains(name, a) or contains(a, name)], name
        assert row["bls_title"].lower() not in audit_titles, name


# -- splitting by family -------------------------------------------------------------------

def test_split_by_family_keeps_families_whole_and_puts_every_domain_in_validation(gender):
    train, validation = split(gender, validation_fraction=0.15, seed=0, by="family")
    assert len(train) + len(validation) == len(gender)
    assert not {family_of(r) for r in train} & {family_of(r) for r in validation}
    assert not {group_of(r) for r in train} & {group_of(r) for r in validation}
    for domain in DOMAINS:
        for kind in ("template", "context"):
            assert any(r["meta"]["domain"] == domain and r["meta"]["kind"] == kind for r in validation), (domain, kind)
    assert (train, validation) == split(gender, validation_fraction=0.15, seed=0, by="family")


def test_split_by_family_leaves_a_lone_family_in_train_and_by_group_is_unchanged():
    records = [{"id": f"r{i}", "text": f"t{i}", "meta": {"group": f"g{i // 2}", "family": f"f{i // 8}",
                                                       "domain": "a" if i < 32 else "b"}} for i in range(40)]
    train, validation = split(records, validation_fraction=0.25, seed=1, by="family")
    assert {r["meta"]["family"] for r in validation} <= {"f0", "f1", "f2", "f3"}   # domain b has one family
    assert len({r["meta"]["family"] for r in validation}) == 1
    assert all(r["meta"]["domain"] == "a" for r in validation)
    by_group = split(records, validation_fraction=0.25, seed=1)
    assert by_group == split(records, validation_fraction=0.25, seed=1, by="group")
    with pytest.raises(ValueError):
        split(records, validation_fraction=0.25, seed=1, by="row")


def test_api_builds_split_by_family_with_a_card_per_domain_and_passes_the_guard():
    result = api.pairs(out=None, axis="religion")
    assert result.card["contamination"]["overlapping_records"] == 0
    train_families = {family_of(r) for r in result.train}
    assert not train_families & {family_of(r) for r in result.validation}
    domains = result.card["counts"]["validation"]["domains"]
    assert set(domains) == set(DOMAINS) and all(d["pairs"] > 0 and d["contexts"] > 0 for d in domains.values())
    assert result.card["settings"]["split_by"] == "family"
    counts = result.card["counts"]["after"]["attributes"]["religion"]
    assert len(set(counts.values())) == 1 and set(counts) == set(axis_values("religion"))


def test_domains_filter_and_max_pairs_sample_the_builtin_sources():
    result = api.pairs(out=None, domains=["occupations"], guard=NO_GUARD)
    rows = result.train + result.validation
    assert {r["meta"]["domain"] for r in rows} == {"occupations"}
    assert any(r["meta"]["kind"] == "template" for r in result.validation)
    small = api.pairs(out=None, domains=["traits", "sports"], max_pairs=50, contexts=False, guard=NO_GUARD)
    rows = small.train + small.validation
    assert len({group_of(r) for r in rows}) == 50 and not any(r["meta"]["kind"] == "context" for r in rows)


# -- corpus text, streamed -----------------------------------------------------------------

def write_big_corpus(path: Path, lines: int, every: int) -> Path:
    filler = ("The river valley was quiet in the early morning while the traders carried their grain along the "
              "old road to the market town")
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(lines):
            if i % 5 == 4:
                handle.write("\n")
            elif i % every == 0:
                handle.write(f"Later that year her brother moved to harbour {i}, where he opened a small bakery.\n")
            else:
                handle.write(f"{filler} {i}.\n")
    return path


PEAK_RSS = """
import resource, sys
from fairtune.curation.pairs import corpus_records
records, stats = corpus_records([sys.argv[1]], axis="gender")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, stats.pairs, stats.files[0].lines,
      stats.files[0].documents, stats.dropped["nothing_to_swap"])
"""


def peak_rss(path: Path) -> list[int]:
    """Peak resident memory (bytes) of a fresh process that pairs the file, and its counts."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path)], capture_output=True, text=True, check=True)
    return [int(x) for x in done.stdout.split()]


def test_a_large_file_streams_in_bounded_memory_and_max_pairs_stops_reading(tmp_path):
    path = write_big_corpus(tmp_path / "big.txt", 200_000, 2_000)
    size = path.stat().st_size
    assert size > 18_000_000
    small = write_big_corpus(tmp_path / "small.txt", 2_000, 2_000)
    started = time.perf_counter()
    peak, pairs, lines, documents, nothing = peak_rss(path)
    assert time.perf_counter() - started < 60
    baseline = peak_rss(small)[0]
    # Reading the file whole would hold at least its size again (and its lines); streaming holds a line.
    assert peak - baseline < size / 3, f"{peak - baseline} more bytes for a {size}-byte file"
    assert pairs == 100 and lines == 200_000 and documents == 40_000 and nothing > 100_000

    started = time.perf_counter()
    records, stats = corpus_records([path], axis="gender", max_pairs=25)
    assert time.perf_counter() - started < 30
    assert stats.pairs == 25 and len(records) == 50 and stats.stopped_early
    assert stats.files[0].lines < 60_000


def test_wikitext_headings_start_documents_and_are_skipped(tmp_path):
    path = tmp_path / "wiki.train.tokens"
    path.write_text(" \n = Valkyria Chronicles = \n \n The game 's director said he wanted a 1 @,@ 200 page "
                    "script . It was long .\n \n = = Plot = = \n \n The heroine hides her powers from the squad "
                    "until the end .\n \n = The Tower Building = \n \n Mr. Smith lived there with his wife until "
                    "he was transferred to the coast .\n", encoding="utf-8")
    records, stats = corpus_records([path], axis="gender")
    assert stats.files[0].format == "wikitext" and stats.files[0].documents == 2
    texts = [r["text"] for r in records if r["meta"]["kind"] == "original"]
    assert texts[0] == "The game's director said he wanted a 1,200 page script. It was long."
    assert not any("=" in t for t in texts)
    families = [r["meta"]["family"] for r in records if r["meta"]["kind"] == "original"]
    assert families == ["wiki.train.tokens/doc1", "wiki.train.tokens/doc1", "wiki.train.tokens/doc2"]
    swapped = next(r for r in records if r["meta"]["kind"] == "counterfactual"
                   and r["meta"]["family"].endswith("doc2"))
    assert swapped["text"] == "Ms. Smith lived there with her husband until she was transferred to the coast."
    assert heading_level("= = Plot = =") == 2 and heading_level("= Title =") == 1 and heading_level("a = b") == 0


def test_jsonl_text_and_chat_records_become_pairs_with_counted_drops(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"id": "n1", "text": "Her brother lives in Leeds, where he teaches maths at a large school.\n\n"
                                 "It rained all week in the valley and nobody went out."},
            {"messages": [{"role": "user", "content": "What should I buy my aunt for her birthday?"},
                          {"role": "assistant", "content": "Ask her what she needs most this year."}]},
            {"text": "She left."},
            {"text": "He and she met."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    records, stats = corpus_records([path], axis="gender")
    assert stats.pairs == 2 and stats.dropped["too_short"] == 2 and stats.dropped["nothing_to_swap"] == 1
    chat = [r for r in records if "messages" in r]
    assert [r["meta"]["attributes"]["gender"] for r in chat] == ["female", "male"]
    assert chat[1]["messages"][1]["content"] == "Ask him what he needs most this year."
    for record in records:
        validate_record(record)
        assert record["meta"]["domain"] == "corpus" and record["meta"]["family"].startswith("rows.jsonl/")
    for a, b in zip(records[::2], records[1::2]):
        assert a["meta"]["group"] == b["meta"]["group"]
        assert a["meta"]["attributes"]["gender"] != b["meta"]["attributes"]["gender"]


def test_sentence_splitter_keeps_abbreviations_and_initials():
    assert split_sentences("Mr. Smith met J. R. Jones. The U.S. team won! Did it? Yes.") == [
        "Mr. Smith met J. R. Jones.", "The U.S. team won!", "Did it?", "Yes."]


# -- the command ---------------------------------------------------------------------------

def test_cli_builds_the_builtin_gender_set_with_a_card_that_reports_the_guard(tmp_path):
    out = tmp_path / "pairs"
    result = runner.invoke(app, ["data", "pairs", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "domain occupations:" in result.output and "contamination: 0 of" in result.output
    rows = read_records(out / "train.jsonl") + read_records(out / "validation.jsonl")
    assert {r["meta"]["domain"] for r in rows} == set(DOMAINS)
    assert any(r.get("loss") == "none" for r in rows)
    card = json.loads((out / "data_card.json").read_text())
    assert card["contamination"]["overlapping_records"] == 0 and len(card["contamination"]["references"]) >= 10
    markdown = (out / "data_card.md").read_text()
    assert re.search(r"\*\*Result: 0 of \d+ records overlap \d+ reference texts of \d+ evaluation sets\.\*\*",
                     markdown)
    assert "stereotype\\-pairs" in markdown and "## Domains and families" in markdown
    assert "Families in validation:" in markdown and "association (contexts)" in markdown


def test_an_audit_sentence_in_a_file_fails_the_guard_and_writes_only_the_report(tmp_path):
    from fairtune.audits import AuditOptions, get_audit

    items = get_audit("stereotype-pairs").load(None, AuditOptions()).items
    sentence = next(i.sent_more for i in items if i.bias_type == "gender" and 8 <= len(i.sent_more.split()) <= 40
                    and re.search(r"\b(she|he|her|his)\b", i.sent_more, re.IGNORECASE))
    source = tmp_path / "leak.txt"
    source.write_text(f"The weather was mild for the season.\n\n{sentence}\n", encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "pairs", str(source), "--no-builtin", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert len(error_lines(result.output)) == 1 and "Traceback" not in result.output
    assert "stereotype-pairs" in result.output and "--allow-overlap" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["contamination.json"]
    allowed = runner.invoke(app, ["data", "pairs", str(source), "--no-builtin", "--out", str(out), "--force",
                                  "--allow-overlap"])
    assert allowed.exit_code == 0, allowed.output
    markdown = (out / "data_card.md").read_text()
    assert re.search(r"\*\*Result: [12] of 2 records overlap .*\(allowed by --allow-overlap\)\.\*\*", markdown)


@pytest.mark.parametrize("name, content, expected", [
    ("rows.jsonl", b'{"text": "Her aunt sang."}\n{"text": oops}\n', r"rows\.jsonl, row 2: invalid JSON"),
    ("rows.jsonl", b'{"text": "Her aunt sang."}\n{"prompt": "only a prompt"}\n',
     r"rows\.jsonl, row 2, field 'completion': missing or empty"),
    ("latin.txt", "She went to the café.\nHe followed.\nCrème brûlée\n".encode("latin-1"),
     r"latin\.txt, row 1: not valid UTF-8"),
    ("empty.txt", b"", r"empty\.txt: empty file"),
    ("blank.jsonl", b"\n  \n", r"blank\.jsonl: empty file"),
])
def test_bad_input_is_one_line_naming_file_and_row_and_writes_nothing(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "pairs", str(path), "--no-builtin", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and re.search(expected, " ".join(result.output.split())), result.output
    assert not out.exists()


@pytest.mark.parametrize("args, expected", [
    (["--axis", "race"], "field 'axis': unknown axis 'race'"),
    (["--domain", "cooking"], "field 'domain': unknown domain 'cooking'"),
    (["--no-builtin"], "nothing to build"),
])
def test_bad_options_are_one_line(tmp_path, args, expected):
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "pairs", "--out", str(out), *args])
    assert result.exit_code == 2 and expected in " ".join(result.output.split()), result.output
    assert len(error_lines(result.output)) == 1 and not out.exists()


def test_loss_none_is_a_valid_record_loss():
    assert validate_record({"text": "When the glazier finished,", "loss": "none"})["loss"] == "none"
