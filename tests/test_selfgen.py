"""Self-generated corpus: seeded sampling on the tiny model, filters and their accounting."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

import fairtune.curation.selfgen as selfgen
from fairtune.curation.hygiene import normalise
from fairtune.curation.records import validate_record
from fairtune.curation.selfgen import (
    DROP_REASONS,
    builtin_topics,
    generate_corpus,
    is_loop,
    screen,
    strip_preamble,
    topic_cycle,
    trim_to_sentence,
)
from fairtune.engine.generation import Generation, GenerationEngine
from fairtune.errors import InputError

AUDIT_DATA = Path(__file__).resolve().parents[1] / "src" / "fairtune" / "audits" / "data"
FAKE = SimpleNamespace(model=None, tokenizer=None, spec=SimpleNamespace(raw="fake-model"))
GOOD = "The nurse checked the charts, greeted the patients and made a pot of tea for the night."


def gen(text: str, finish: str = "stop") -> Generation:
    return Generation([], "", text, len(text.split()), finish)


class ScriptedEngine:
    """Stands in for GenerationEngine: hands out scripted replies in order, records the calls."""

    script: list[Generation] = []
    calls: list[dict] = []

    @classmethod
    def from_loaded(cls, loaded, **kwargs):
        return cls()

    def generate(self, prompts, **kwargs):
        ScriptedEngine.calls.append({"prompts": list(prompts), **kwargs})
        out = [self.script.pop(0) if self.script else gen(GOOD + f" Day {len(self.calls)}-{i}.")
               for i, _ in enumerate(prompts)]
        return out


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(selfgen, "GenerationEngine", ScriptedEngine)
    ScriptedEngine.calls = []

    def run(script, **kwargs):
        ScriptedEngine.script = list(script)
        return generate_corpus(FAKE, **kwargs)
    return run


class StoppingEngine(GenerationEngine):
    """The real engine on the tiny random model, its replies marked as stopped (the random model
    never ends a sentence, so the truncation filter would drop everything)."""

    def generate(self, prompts, **kwargs):
        return [replace(g, finish_reason="stop") for g in super().generate(prompts, **kwargs)]


def check_accounting(records, stats):
    assert stats["kept"] == len(records) <= stats["requested"]
    assert stats["generated"] == stats["kept"] + sum(stats["dropped"].values()) + stats["unused"]
    assert set(stats["dropped"]) == set(DROP_REASONS)
    assert stats["shortfall"] == stats["requested"] - stats["kept"]
    assert (stats["note"] is None) == (stats["shortfall"] == 0)
    assert stats["generated"] <= stats["max_generations"] and stats["seconds"] >= 0


# -- on the tiny model --------------------------------------------------------------------------

def test_same_seed_same_corpus_on_the_tiny_model(tiny_loaded, monkeypatch):
    monkeypatch.setattr(selfgen, "GenerationEngine", StoppingEngine)
    kwargs = dict(n=6, max_new_tokens=12, batch_size=4, min_words=1)
    first, stats = generate_corpus(tiny_loaded, seed=3, **kwargs)
    second, _ = generate_corpus(tiny_loaded, seed=3, **kwargs)
    other, _ = generate_corpus(tiny_loaded, seed=4, **kwargs)
    assert first and first == second and first != other
    check_accounting(first, stats)
    topics = set(builtin_topics())
    for record in first:
        validate_record(record)
        user, assistant = record["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant") and user["content"] in topics
        assert record["meta"]["kind"] == "generated"
        assert record["meta"]["source"] == f"selfgen:{tiny_loaded.spec.raw}"
        assert record["id"].startswith("selfgen-")
    assert len({r["id"] for r in first}) == len(first)


def test_truncated_replies_are_counted_and_the_shortfall_is_said(tiny_loaded):
    # Unpatched: the random model runs out of budget mid-"sentence" every time.
    records, stats = generate_corpus(tiny_loaded, n=4, max_new_tokens=8, batch_size=4, max_generations=6)
    check_accounting(records, stats)
    assert stats["generated"] == 6 and stats["rounds"] == 2
    assert stats["shortfall"] > 0 and stats["dropped"]["truncated"] > 0
    assert f"kept {stats['kept']} of the 4" in stats["note"] and "'truncated'" in stats["note"]


# -- filters, with scripted replies ---------------------------------------------------------------

def test_each_filter_drops_and_counts_its_reason(scripted):
    script = [
        gen("   "),                                                         # empty
        gen("I'm sorry, but I can't write that."),                          # refusal
        gen("the the the the the the the the the the the the the the"),     # degenerate (triage)
        gen("We went to the shop and then we went to the shop and then we went to the shop and "
            "then we went to the shop"),                                    # degenerate (loop)
        gen("The electrician climbed the ladder and looked at the wir", "length"),  # truncated
        gen("Short and sweet."),                                            # too_short
        gen(GOOD),                                                          # kept
        gen(GOOD.upper()),                                                  # duplicate (normalised)
        gen("Sure! Here is a short paragraph about a baker:\n\n" + GOOD.replace("nurse", "baker")),
        gen(GOOD.replace("nurse", "pilot") + " Then she sat down to wr", "length"),  # trimmed
    ]
    records, stats = scripted(script, n=3, batch_size=16, min_words=8, max_generations=10)
    assert stats["dropped"] == {"empty": 1, "refusal": 1, "degenerate": 2, "truncated": 1, "too_short": 1,
                                "duplicate": 1}
    assert stats["kept"] == 3 and stats["trimmed"] == 1 and stats["preambles"] == 1
    replies = [r["messages"][1]["content"] for r in records]
    assert replies[0] == GOOD
    assert replies[1] == GOOD.replace("nurse", "baker")            # preamble line removed
    assert replies[2] == GOOD.replace("nurse", "pilot")            # cut after the last full sentence
    assert records[2]["meta"]["trimmed"] is True and records[2]["meta"]["finish_reason"] == "length"
    check_accounting(records, stats)


def test_drops_are_made_up_for_by_oversampling_up_to_the_cap(scripted):
    records, stats = scripted([gen("")] * 5, n=5, batch_size=4)   # then good replies
    assert stats["kept"] == 5 and stats["dropped"]["empty"] == 5 and stats["rounds"] >= 2
    assert stats["shortfall"] == 0 and stats["note"] is None
    check_accounting(records, stats)
    # the second round samples with another seed and goes on through the topic cycle
    seeds = [call["seed"] for call in ScriptedEngine.calls]
    assert len(set(seeds)) == len(seeds) and seeds[0] == 0
    assert all(call["do_sample"] for call in ScriptedEngine.calls)


def test_a_shortfall_is_never_silent(scripted):
    records, stats = scripted([gen("")] * 100, n=4, max_generations=7)
    assert records == [] and stats["generated"] == 7 and stats["shortfall"] == 4
    assert "'empty' (7)" in stats["note"]
    check_accounting(records, stats)


def test_surplus_replies_of_the_last_round_are_counted_as_unused(scripted):
    records, stats = scripted([gen("x")] * 2, n=4, max_generations=40)
    # round 1 keeps 2 of 4; round 2 asks for 2 / 0.5 * 1.2 -> 5 replies and needs only 2 of them
    assert stats["kept"] == 4 and stats["dropped"]["too_short"] == 2 and stats["unused"] == 3
    check_accounting(records, stats)


def test_topics_cycle_in_a_seeded_order(scripted):
    topics = [f"Describe topic number {i}." for i in range(5)]
    records, _ = scripted([], n=10, topics=topics, seed=7)
    asked = [r["messages"][0]["content"] for r in records]
    assert sorted(asked[:5]) == sorted(topics) and sorted(asked[5:]) == sorted(topics)
    again, _ = scripted([], n=10, topics=topics, seed=7)
    assert [r["messages"][0]["content"] for r in again] == asked
    cycle = topic_cycle(topics, 7)
    assert [next(cycle) for _ in range(10)] == asked
    with pytest.raises(InputError):
        scripted([], n=2, topics=["fine", "  "])
    with pytest.raises(InputError):
        scripted([], n=0)


# -- helpers ----------------------------------------------------------------------------------------

def test_trim_to_sentence():
    assert trim_to_sentence("One. Two three") == "One."
    assert trim_to_sentence('She said "yes." And then') == 'She said "yes."'
    assert trim_to_sentence("It cost 3.5 dollars and") is None
    assert trim_to_sentence("Done!") == "Done!"


def test_screen_and_helpers():
    assert is_loop("a b c d " * 6) and not is_loop(GOOD)
    assert strip_preamble("Certainly! Here's one:\nThe text.") == "The text."
    assert strip_preamble("Here is the thing: it works.") == "Here is the thing: it works."
    assert screen(gen("A good sentence that ends properly here.", "length"), min_words=3)[0] is None
    assert screen(gen("no end at all here", "length"), min_words=3)[0] == "truncated"


def test_builtin_topics_are_ours_and_do_not_touch_the_audits():
    topics = builtin_topics()
    assert len(topics) >= 60 and len(set(topics)) == len(topics)
    audit = set()
    for path in AUDIT_DATA.rglob("*"):
        if path.is_file():
            words = normalise(path.read_text(encoding="utf-8", errors="ignore")).split()
            audit.update(tuple(words[i:i + 8]) for i in range(len(words) - 7))
    for topic in topics:
        words = normalise(topic).split()
        assert not any(tuple(words[i:i + 8]) in audit for i in range(len(words) - 7)), topic
