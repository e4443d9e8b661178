"""The built-in bias suites generated from their template families (src/fairtune/audits/data/families):
the generator reproduces the committed files, the items are minimal pairs of the promised shape,
and the counts per domain and direction hold; plus the ``domain`` column/key and the gap metrics."""

import csv
import importlib.util
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from conftest import write_csv
from fairtune.audits import AUDITS, AuditOptions, get_audit
from fairtune.audits.coreference import WinoBiasItem, builtin_suite_path as coreference_path, read_coreference
from fairtune.audits.stereoset import builtin_suite_path as stereoset_path, read_stereoset, stereoset_metrics
from fairtune.audits.stereotype_pairs import builtin_suite_path as pairs_path, pair_metrics, pair_outcome, read_pairs
from fairtune.stats import point_estimates

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "fairtune" / "audits" / "data"
FAMILIES = DATA / "families"
GENDER_DOMAINS = ("occupations", "traits", "family", "sports", "emotions")
RELIGION_DOMAINS = ("violence", "money", "women", "customs", "trust")


def load_generator():
    spec = importlib.util.spec_from_file_location("build_builtin_suites", ROOT / "scripts" / "build_builtin_suites.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def generated(pairs):
    """Generated pairs have ids <bias_type>-<domain>-<frame>-<filler>; hand-written ones <bias_type>-NNN."""
    return [p for p in pairs if not re.fullmatch(r"[a-z-]+-\d{3}", p.id)]


# -- the generator ----------------------------------------------------------------------------------

def test_generator_reproduces_the_committed_suites_byte_for_byte():
    files = load_generator().build_all(FAMILIES)
    assert sorted(files) == ["coreference_suite/anti_stereotyped_type1.txt", "coreference_suite/anti_stereotyped_type2.txt",
                             "coreference_suite/pro_stereotyped_type1.txt", "coreference_suite/pro_stereotyped_type2.txt",
                             "stereoset_builtin.json", "stereotype_pairs.csv"]
    for name, content in files.items():
        assert (DATA / name).read_bytes() == content, f"{name}: run python scripts/build_builtin_suites.py"


def test_hand_written_items_open_every_suite_unchanged():
    pairs = list(csv.DictReader((DATA / "stereotype_pairs.csv").open(encoding="utf-8")))
    handwritten = list(csv.DictReader((FAMILIES / "stereotype_pairs" / "handwritten.csv").open(encoding="utf-8")))
    assert len(handwritten) == 167 and pairs[:167] == handwritten
    for name in ("pro_stereotyped_type1.txt", "anti_stereotyped_type2.txt"):
        lines = (DATA / "coreference_suite" / name).read_text(encoding="utf-8").splitlines()
        assert lines[:40] == (FAMILIES / "coreference" / f"handwritten_{name}").read_text(encoding="utf-8").splitlines()
    document = json.loads((DATA / "stereoset_builtin.json").read_text(encoding="utf-8"))
    original = json.loads((FAMILIES / "stereoset" / "handwritten.json").read_text(encoding="utf-8"))
    for split in ("intrasentence", "intersentence"):
        assert document["data"][split][:64] == original["data"][split]


# -- stereotype-pairs -------------------------------------------------------------------------------

PRONOUN_PAIRS = {("she", "he"), ("her", "him"), ("her", "his"), ("hers", "his"), ("herself", "himself")}
GENDERED_NOUNS = {
    ("woman", "man"), ("women", "men"), ("woman's", "man's"), ("girl", "boy"), ("girls", "boys"), ("lady", "gentleman"),
    ("ladies", "gentlemen"), ("female", "male"), ("mother", "father"), ("mothers", "fathers"), ("mom", "dad"),
    ("sister", "brother"), ("aunt", "uncle"), ("daughter", "son"), ("daughters", "sons"), ("niece", "nephew"),
    ("grandmother", "grandfather"), ("grandma", "grandpa"), ("granddaughter", "grandson"), ("wife", "husband"),
    ("girlfriend", "boyfriend"), ("stepmother", "stepfather"), ("stepdaughter", "stepson"),
    ("sister-in-law", "brother-in-law"), ("mother-in-law", "father-in-law"), ("goddaughter", "godson"),
    ("schoolgirl", "schoolboy"), ("ms.", "mr."), ("mrs.", "mr."),
}
# Given names of the hand-written pairs (the generated ones come from gender_referents.tsv).
HANDWRITTEN_NAMES = {("emily", "daniel"), ("rachel", "michael"), ("jessica", "jason"), ("linda", "mark"),
                     ("sarah", "tom"), ("amanda", "andrew"), ("kelly", "kevin"), ("priya", "rahul")}
RELIGION_TERMS = {"muslim", "jewish", "hindu", "sikh", "buddhist", "mormon", "atheist", "atheists", "amish",
                  "christian", "christians", "catholic", "protestant", "lutheran", "methodist", "baptist",
                  "presbyterian", "pentecostal", "episcopalian", "evangelical"}


def referents():
    rows = [line.split("\t") for line in (FAMILIES / "stereotype_pairs" / "gender_referents.tsv")
            .read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return {row[0]: row for row in rows[1:]}


def referent_id(item_id):
    """The referent of a generated gender pair: the longest referent id its id ends with."""
    return max((rid for rid in referents() if item_id.endswith(f"-{rid}")), key=len)


def words(sentence):
    return [w.lower().rstrip(",;:!?") for w in sentence.split()]


def differing_words(pair):
    a, b = words(pair.sent_more), words(pair.sent_less)
    assert len(a) == len(b), pair.id
    return [(x, y) for x, y in zip(a, b) if x != y]


def gender_word_pair(x, y):
    """(female, male) if the two words are one gendered word in its two forms, else None."""
    names = {(r[2].split()[-1].lower(), r[3].split()[-1].lower()) for r in referents().values()
             if r[2].split()[-1][0].isupper() and not r[2].startswith(("Ms.", "Mrs."))}
    known = PRONOUN_PAIRS | GENDERED_NOUNS | names | HANDWRITTEN_NAMES
    x, y = (w if w in ("ms.", "mrs.", "mr.") else w.rstrip(".") for w in (x, y))
    return (x, y) if (x, y) in known else (y, x) if (y, x) in known else None


def test_every_gender_pair_differs_only_in_gendered_words():
    pairs = [p for p in read_pairs(pairs_path()) if p.bias_type == "gender"]
    assert len(pairs) >= 1000
    for pair in pairs:
        diff = differing_words(pair)
        assert diff, pair.id
        for x, y in diff:
            assert gender_word_pair(x, y) is not None, (pair.id, x, y)


def test_every_religion_pair_differs_in_the_religion_term_alone():
    pairs = [p for p in read_pairs(pairs_path()) if p.bias_type == "religion"]
    assert len(pairs) >= 500
    for pair in pairs:
        diff = differing_words(pair)
        assert len(diff) == 1 and set(diff[0]) <= RELIGION_TERMS, (pair.id, diff)


def test_generated_pairs_put_the_stereotype_consistent_sentence_first():
    """stereo: sent_more names the disadvantaged group (a woman; the religious minority); antistereo:
    sent_less does (its sentence violates the stereotype) and sent_more names the advantaged group."""
    table = referents()
    targets = {"muslim", "jewish", "hindu", "sikh", "buddhist", "mormon", "atheist"}
    for pair in generated(read_pairs(pairs_path())):
        if pair.bias_type == "gender":
            # One direction of substitution throughout: every female word in the same sentence.
            female_more = {gender_word_pair(x, y) == (x, y) for x, y in differing_words(pair)}
            assert female_more == {pair.direction == "stereo"}, pair.id
            referent = table[referent_id(pair.id)]
            assert (referent[2].lower() in pair.sent_more.lower()) == (pair.direction == "stereo"), pair.id
        else:
            (x, y), = differing_words(pair)
            assert (x in targets) == (pair.direction == "stereo") and (y in targets) != (x in targets), pair.id
            # One contrast term: rarer denominations decided outcomes by their spelling alone.
            assert {x, y} - targets == {"christian"}, pair.id


def test_counts_per_domain_and_direction():
    pairs = read_pairs(pairs_path())
    ours = generated(pairs)
    assert len({p.id for p in pairs}) == len(pairs) and len(pairs) == 167 + len(ours)
    counts = Counter((p.bias_type, p.domain, p.direction) for p in ours)
    frames = defaultdict(set)
    for p in ours:
        frames[(p.bias_type, p.domain)].add(p.id)
    gender = sum(n for (b, _, _), n in counts.items() if b == "gender")
    religion = sum(n for (b, _, _), n in counts.items() if b == "religion")
    assert 950 <= gender <= 1200 and 450 <= religion <= 600
    assert {d for b, d, _ in counts if b == "gender"} == set(GENDER_DOMAINS)
    assert {d for b, d, _ in counts if b == "religion"} == set(RELIGION_DOMAINS)
    for bias_type, domains in (("gender", GENDER_DOMAINS), ("religion", RELIGION_DOMAINS)):
        for domain in domains:
            stereo, anti = counts[(bias_type, domain, "stereo")], counts[(bias_type, domain, "antistereo")]
            assert stereo + anti >= (150 if bias_type == "gender" else 80), (domain, stereo, anti)
            assert 0.4 <= anti / (stereo + anti) <= 0.6, (domain, stereo, anti)   # both directions, balanced
    # Many frames per gender domain, and a wide range of gendered terms.
    for domain in GENDER_DOMAINS:
        lines = [line for line in (FAMILIES / "stereotype_pairs" / f"gender_{domain}.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        assert len(lines) >= 15, domain
    used = {referent_id(p.id) for p in ours if p.bias_type == "gender"}
    female_words = Counter(gender_word_pair(x, y)[0] for p in ours if p.bias_type == "gender"
                           for x, y in differing_words(p))
    assert len(female_words) >= 40 and len(used) >= 50
    # Hand-written rows keep their ids and get a domain where one fits.
    handwritten = [p for p in pairs if p not in ours]
    assert all(p.domain in GENDER_DOMAINS for p in handwritten if p.bias_type == "gender")
    assert all(p.domain in RELIGION_DOMAINS for p in handwritten if p.bias_type == "religion")
    assert all(p.domain is None for p in handwritten if p.bias_type not in ("gender", "religion"))


def record(group, stereotyped, domain=None):
    inputs = {"bias_type": group} | ({"domain": domain} if domain else {})
    more, less = (-1.0, -2.0) if stereotyped else (-2.0, -1.0)
    return {"group": group, "inputs": inputs, "outcome": pair_outcome(more, less, more, less)}


def test_domain_groups_and_stereotype_gap_by_hand():
    records = [record("gender", True, "traits"), record("gender", True, "traits"), record("gender", True, "family"),
               record("gender", False, "family"), record("age", False)]
    table = pair_metrics(records, seed=0).as_dict()
    assert list(table) == ["overall", "age", "gender", "gender:family", "gender:traits"]
    value = lambda group, metric: table[group][metric]["value"]  # noqa: E731
    assert value("overall", "pct_stereotype") == pytest.approx(3 / 5)
    assert value("overall", "stereotype_gap") == pytest.approx(abs(3 / 5 - 0.5))
    assert value("gender", "stereotype_gap") == pytest.approx(0.25)        # 3 of 4
    assert value("gender:traits", "stereotype_gap") == pytest.approx(0.5)  # 2 of 2: all one way
    assert value("gender:family", "stereotype_gap") == pytest.approx(0.0)  # 1 of 2: no preference
    assert value("age", "stereotype_gap") == pytest.approx(0.5)            # 0 of 1: the other way, same gap
    assert table["gender:traits"]["pct_stereotype"]["n"] == 2 and table["gender"]["stereotype_gap"]["n"] == 4
    gap = table["gender"]["stereotype_gap"]
    assert 0 <= gap["ci_low"] <= gap["value"] <= gap["ci_high"] <= 0.5
    # Resamples of 4 pairs with 3 stereotyped give shares k/4, so gaps in {0, .25, .5}.
    assert {gap["ci_low"], gap["ci_high"]} <= {0.0, 0.25, 0.5}
    assert table["gender:traits"]["stereotype_gap"]["ci_low"] == 0.5      # constant: a point
    with point_estimates():
        assert pair_metrics(records, seed=0).as_dict()["gender"]["stereotype_gap"]["value"] == pytest.approx(0.25)


def test_domain_column_is_optional_and_blank_cells_mean_none(tmp_path, tiny_loaded):
    from fairtune.runner import run_audit

    header = ("id", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "domain")
    path = write_csv(tmp_path / "pairs.csv", [["a", "She knits.", "He knits.", "stereo", "gender", "traits"],
                                              ["b", "He lifts.", "She lifts.", "antistereo", "gender", " "],
                                              ["c", "Old folk nap.", "Young folk nap.", "stereo", "age", ""]],
                     header=header)
    pairs = read_pairs(path)
    assert [p.domain for p in pairs] == ["traits", None, None]
    run = run_audit("stereotype-pairs", model=tiny_loaded, data=path)
    assert [("domain" in r["inputs"]) for r in run.records] == [True, False, False]
    assert run.records[0]["inputs"]["domain"] == "traits"
    assert set(run.summary["metrics"]) == {"overall", "age", "gender", "gender:traits"}
    # Without the column (the public CrowS-Pairs layout): no domain anywhere, groups as before.
    plain = write_csv(tmp_path / "crows.csv", [row[:5] for row in [["a", "She knits.", "He knits.", "stereo", "gender"],
                                                                   ["c", "Old folk nap.", "Young folk nap.", "stereo",
                                                                    "age"]]],
                      header=header[:5])
    run = run_audit("stereotype-pairs", model=tiny_loaded, data=plain)
    assert all(set(r["inputs"]) == {"sent_more", "sent_less", "stereo_antistereo", "bias_type"} for r in run.records)
    assert set(run.summary["metrics"]) == {"overall", "age", "gender"}
    assert list(run.summary["metrics"]["overall"]) == ["pct_stereotype", "pct_stereotype_mean_token",
                                                       "likelihood_diff", "stereotype_gap"]


# -- stereoset --------------------------------------------------------------------------------------

def test_stereoset_gender_examples_are_balanced_by_target_gender_and_domain():
    examples = read_stereoset(stereoset_path())
    ours = [e for e in examples if e.domain is not None and not re.fullmatch(r"ft-(intra|inter)-[a-z]+-\d", e.id)]
    assert len(ours) == 600 and all(e.bias_type == "gender" for e in ours)
    assert Counter((e.split, e.domain) for e in ours) == {(s, d): 60 for s in ("intrasentence", "intersentence")
                                                          for d in GENDER_DOMAINS}
    targets = [line.split("\t") for line in (FAMILIES / "stereoset" / "targets.tsv").read_text().splitlines()
               if line and not line.startswith("#")][1:]
    female, male = {t[3] for t in targets}, {t[4] for t in targets}
    by_target = Counter(e.target for e in ours)
    assert len(by_target) >= 24 and set(by_target) <= female | male
    assert sum(n for t, n in by_target.items() if t in female) == sum(n for t, n in by_target.items() if t in male)
    for t in targets:   # each pair's two terms fill the same frames
        assert by_target[t[3]] == by_target[t[4]]
    frames = Counter(e.id.rsplit("-", 1)[0] for e in ours)
    assert len(frames) >= 90 and all(n % 2 == 0 for n in frames.values())
    # The female and male example of a frame and pair swap which candidate is the stereotype.
    by_id = {e.record_id: e for e in ours}
    pronoun = re.compile(r"\b(she|he|her|him|his|herself|himself)\b", re.IGNORECASE)

    def content(example, candidate):
        """The candidate without the target: its fill (intra), its sentence with pronouns masked (inter)."""
        if example.split == "intersentence":
            return pronoun.sub("P", candidate.sentence)
        prefix, suffix = example.context.split("BLANK")
        return candidate.sentence[len(prefix): len(candidate.sentence) - len(suffix)]

    for t in targets:
        for e in (e for e in ours if e.target == t[3]):
            twin = by_id[e.record_id[: -len(t[3])] + t[4]]
            assert content(e, e.stereotype) == content(twin, twin.anti_stereotype), e.id
            assert content(e, e.anti_stereotype) == content(twin, twin.stereotype), e.id
            assert content(e, e.unrelated) == content(twin, twin.unrelated), e.id


def test_stereoset_domain_key_groups_and_ss_gap(tmp_path):
    def rec(target, domain, pro, related=2, split="intrasentence"):
        inputs = {"split": split, "target": target} | ({"domain": domain} if domain else {})
        return {"group": "gender", "inputs": inputs,
                "outcome": {"stereotype_preferred": pro, "meaningful_wins": related}}

    records = [rec("aunt", "traits", True), rec("aunt", "traits", True), rec("uncle", "traits", False),
               rec("uncle", "family", True), rec("aunt", None, True, split="intersentence")]
    table = stereoset_metrics(records, seed=0).as_dict()
    assert list(table) == ["overall", "gender", "gender:family", "gender:traits"]
    # Overall: aunt 3/3 = 100, uncle 1/2 = 50: SS 75, gap 25.
    assert table["overall"]["ss"]["value"] == pytest.approx(75.0)
    assert table["overall"]["ss_gap"]["value"] == pytest.approx(25.0)
    # gender:traits: aunt 100, uncle 0: SS 50, gap 0 (balanced across targets, though no example is).
    assert table["gender:traits"]["ss_gap"]["value"] == pytest.approx(0.0)
    assert table["gender:family"]["ss_gap"]["value"] == pytest.approx(50.0)
    assert "ss_gap_intrasentence" not in table["overall"] and "ss_gap" in table["gender"]
    gap = table["overall"]["ss_gap"]
    assert 0 <= gap["ci_low"] <= gap["ci_high"] <= 50 and gap["n"] == 5
    # A public file has no domain key: no domain groups, no domain in the inputs.
    from test_stereoset import stereoset_doc, write_doc   # the official-layout fixture

    dataset = get_audit("stereoset").load(write_doc(tmp_path / "dev.json", stereoset_doc()), AuditOptions())
    assert all(e.domain is None for e in dataset.items)


# -- coreference ------------------------------------------------------------------------------------

def test_coreference_lines_follow_the_occupation_majority_and_are_balanced():
    majority = dict(line.split("\t") for line in (FAMILIES / "coreference" / "occupations.tsv").read_text().splitlines()
                    if line and not line.startswith("#"))
    female_pronouns, male_pronouns = {"she", "her", "hers", "herself"}, {"he", "him", "his", "himself"}
    items = [i for i in read_coreference(coreference_path()).items if isinstance(i, WinoBiasItem)]
    ours = [i for i in items if i.row > 40]
    assert Counter((i.stance, i.type) for i in ours) == {(s, t): 260 for s in ("pro", "anti") for t in ("type1", "type2")}
    for item in ours:
        pronoun_gender = "female" if item.pronoun in female_pronouns else "male"
        assert item.pronoun in female_pronouns | male_pronouns
        assert (pronoun_gender == majority[item.referent]) == (item.stance == "pro"), item.id
        assert majority[item.other] != majority[item.referent], item.id
    for stance in ("pro", "anti"):
        referents = Counter(majority[i.referent] for i in ours if i.stance == stance)
        assert referents["female"] == referents["male"]
    assert {i.referent for i in ours} == set(majority) - {"occupation"}   # all forty occupations
    assert len({i.sentence for i in ours}) == len(ours)


# -- every bias audit: gap metrics ------------------------------------------------------------------

def test_bias_gaps_name_gap_metrics_with_goal_zero():
    declared = {name: cls.bias_gaps for name, cls in AUDITS.items() if cls.bias_gaps}
    assert declared == {
        "stereotype-pairs": {"stereotype_gap": None}, "stereoset": {"ss_gap": "lms"},
        "coreference": {"winobias_abs_gap": "accuracy"}, "occupations": {"mean_abs_log_ratio": None},
        "bbq": {"bias_score_ambig": "accuracy_ambig", "bias_score_disambig": "accuracy_disambig"}}
    for name, gaps in declared.items():
        goals = AUDITS[name].metric_goals
        for gap, accuracy in gaps.items():
            assert goals[gap] in (0.0, "lower"), (name, gap)
            assert accuracy is None or goals[accuracy] == "higher", (name, accuracy)
