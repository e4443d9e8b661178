"""Self-generated training text: the base model's own replies to neutral-topic prompts.

When a user has no corpus to augment, we sample one from the model being debiased. Text from
the model's own distribution keeps the fine-tune close to what the model already does, so the
debiasing step (counterfactual augmentation over this text) forgets little else.

The prompts (``data/selfgen_topics.txt``, ours) are everyday topics and people in many roles at
work and at home, so that counterfactual augmentation has words to swap. They are cycled in a
seeded order; replies are sampled (``do_sample``, seeded: the same model, arguments and seed give
the same corpus) through :class:`~fairtune.engine.generation.GenerationEngine`.

Every reply passes these filters, in order; a reply that fails one is dropped and counted under
its reason in ``stats["dropped"]``:

* ``empty``: nothing but whitespace or quotes/markdown;
* ``refusal``: the reply refuses a harmless request (training on it would teach over-refusal);
* ``degenerate``: :func:`fairtune.judges.refusal.triage`'s rule (few distinct words, one line
  over and over) or a loop: at least ``_REPEAT_SHARE`` of its word trigrams are repeats;
* ``truncated``: the token budget ran out (``finish_reason == "length"``) and the reply has no
  complete sentence to trim back to; one that has is cut after its last full sentence (counted
  in ``stats["trimmed"]``);
* ``too_short``: fewer than ``min_words`` words (after trimming);
* ``duplicate``: the same normalised text as a reply already kept.

A leading "Sure! Here is a paragraph about ...:" line is removed first (``stats["preambles"]``).
When filters leave fewer than ``n`` replies, more are generated (new topics from the cycle, a new
seed) until ``n`` are kept or ``max_generations`` replies have been made; a shortfall is never
silent: ``stats["shortfall"]`` and ``stats["note"]`` say so.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fairtune.curation.hygiene import normalise
from fairtune.curation.records import record_key, validate_record
from fairtune.engine.generation import DEFAULT_GENERATION_BATCH, Generation, GenerationEngine
from fairtune.errors import InputError
from fairtune.judges.refusal import DEGENERATE, EMPTY, triage
from fairtune.judges.text_scores import is_refusal
from fairtune.readers import read_text

DROP_REASONS = ("empty", "refusal", "degenerate", "truncated", "too_short", "duplicate")
KIND = "generated"
_REPEAT_SHARE = 0.3       # share of repeated word trigrams that marks a loop
_ROUND_SEED_STRIDE = 100_003
_WORDS = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(?=\s|$)")
_PREAMBLE = re.compile(r"^\W*(sure|certainly|of course|absolutely|okay|ok|here\b)[^\n]*:\s*\n", re.I)


def builtin_topics_path() -> Path:
    return Path(str(resources.files("fairtune.curation") / "data" / "selfgen_topics.txt"))


def read_topics(path: str | Path) -> list[str]:
    """One prompt a line; blank lines and lines starting with ``#`` are skipped."""
    topics = [line.strip() for line in read_text(path).splitlines()
              if line.strip() and not line.strip().startswith("#")]
    if not topics:
        raise InputError("no topics in the file", file=path)
    return topics


def builtin_topics() -> list[str]:
    return read_topics(builtin_topics_path())


def topic_cycle(topics: Sequence[str], seed: int) -> Iterator[str]:
    """The topics over and over, each pass in a fresh seeded order."""
    rng = random.Random(seed)
    while True:
        order = list(topics)
        rng.shuffle(order)
        yield from order


# -- filters ---------------------------------------------------------------------------------------

def trim_to_sentence(text: str) -> str | None:
    """The text up to and including its last complete sentence; None when it has none."""
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return None
    return text[:ends[-1].end()].rstrip()


def is_loop(text: str, *, n: int = 3, min_words: int = 12, max_repeat_share: float = _REPEAT_SHARE) -> bool:
    """Whether many of the text's word ``n``-grams are repeats (a phrase going round in a loop)."""
    words = _WORDS.findall(text.lower())
    if len(words) < min_words:
        return False
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) >= max_repeat_share


def strip_preamble(text: str) -> str:
    """Drop a leading "Sure! Here's a short paragraph about X:" line when text follows it."""
    match = _PREAMBLE.match(text)
    if match and text[match.end():].strip():
        return text[match.end():].strip()
    return text


def screen(generation: Generation, *, min_words: int) -> tuple[str | None, str, dict[str, bool]]:
    """``(drop_reason or None, cleaned text, flags)`` for one reply; see the module docstring."""
    text = generation.text.strip()
    flags = {"trimmed": False, "preamble": False}
    if triage(text) == EMPTY:
        return "empty", text, flags
    stripped = strip_preamble(text)
    flags["preamble"] = stripped != text
    text = stripped
    if is_refusal(text):
        return "refusal", text, flags
    if triage(text) == DEGENERATE or is_loop(text):
        return "degenerate", text, flags
    if generation.finish_reason == "length":
        trimmed = trim_to_sentence(text)
        if trimmed is None:
            return "truncated", text, flags
        flags["trimmed"] = trimmed != text
        text = trimmed
    if len(_WORDS.findall(text)) < min_words:
        return "too_short", text, flags
    return None, text, flags


# -- the generator ---------------------------------------------------------------------------------

def generate_corpus(loaded: Any, *, n: int, topics: list[str] | None = None, seed: int = 0,
                    max_new_tokens: int = 96, temperature: float = 0.8, top_p: float = 0.95,
                    batch_size: int = DEFAULT_GENERATION_BATCH, progress: bool = False, min_words: int = 8,
                    max_generations: int | None = None) -> tuple[list[dict], dict]:
    """``n`` chat records (topic, the model's reply) and the stats of how they were made.

    ``max_generations`` caps the replies generated in all (default ``2 * n``, at least ``n``):
    filters that drop replies are made up for by generating more, up to the cap.
    """
    _check_positive(n, "n")
    _check_positive(min_words, "min_words")
    _check_positive(batch_size, "batch_size")
    _check_positive(max_new_tokens, "max_new_tokens")
    if not (temperature > 0 and 0 < top_p <= 1):
        raise InputError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}",
                         field="temperature" if not temperature > 0 else "top_p")
    cap = max(n, max_generations if max_generations is not None else 2 * n)
    prompts = _check_topics(topics) if topics is not None else builtin_topics()
    spec = str(getattr(getattr(loaded, "spec", None), "raw", None) or "model")
    source = f"selfgen:{spec}"

    engine = GenerationEngine.from_loaded(loaded, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                          progress=progress)
    cycle = topic_cycle(prompts, seed)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    records: list[dict] = []
    seen: set[str] = set()
    generated = trimmed = preambles = unused = rounds = 0
    started = time.perf_counter()
    while len(records) < n and generated < cap:
        need = n - len(records)
        if rounds == 0:
            ask = need
        else:  # make up for the drop rate seen so far, with a margin
            keep_rate = max(len(records) / generated, 0.1)
            ask = math.ceil(need / keep_rate * 1.2)
        ask = min(ask, cap - generated)
        batch = [next(cycle) for _ in range(ask)]
        replies = engine.generate(batch, do_sample=True, temperature=temperature, top_p=top_p,
                                  seed=seed + rounds * _ROUND_SEED_STRIDE, max_new_tokens=max_new_tokens)
        generated += len(replies)
        rounds += 1
        for topic, reply in zip(batch, replies):
            if len(records) >= n:
                unused += 1
                continue
            reason, text, flags = screen(reply, min_words=min_words)
            if reason is None:
                key = normalise(text)
                if key in seen:
                    reason = "duplicate"
                else:
                    seen.add(key)
            if reason is not None:
                dropped[reason] += 1
                continue
            trimmed += flags["trimmed"]
            preambles += flags["preamble"]
            records.append(_record(topic, text, source=source, seed=seed, reply=reply, trimmed=flags["trimmed"]))

    shortfall = n - len(records)
    stats: dict[str, Any] = {
        "requested": n, "generated": generated, "kept": len(records), "dropped": dropped,
        "trimmed": trimmed, "preambles": preambles, "unused": unused, "shortfall": shortfall,
        "rounds": rounds, "max_generations": cap, "seconds": round(time.perf_counter() - started, 3),
        "model": spec, "seed": seed,
        "sampling": {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens},
        "note": None,
    }
    if shortfall:
        worst = max(dropped, key=dropped.get)
        stats["note"] = (f"kept {len(records)} of the {n} replies asked for: {generated} generated (the cap), "
                         f"{sum(dropped.values())} dropped, most as '{worst}' ({dropped[worst]}); raise "
                         "max_generations or max_new_tokens, or lower min_words")
    return records, stats


def _record(topic: str, text: str, *, source: str, seed: int, reply: Generation, trimmed: bool) -> dict:
    record: dict[str, Any] = {"messages": [{"role": "user", "content": topic},
                                           {"role": "assistant", "content": text}]}
    record = {"id": f"selfgen-{record_key(record)}", **record,
              "meta": {"source": source, "kind": KIND, "seed": seed, "finish_reason": reply.finish_reason,
                       "trimmed": trimmed}}
    return validate_record(record)


def _check_positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"must be a positive whole number, got {value!r}", field=name)


def _check_topics(topics: Sequence[str]) -> list[str]:
    if isinstance(topics, str):
        raise InputError("expected a list of prompts, got one string", field="topics")
    out = []
    for row, topic in enumerate(topics, start=1):
        if not isinstance(topic, str) or not topic.strip():
            raise InputError("empty topic", row=row, field="topics")
        out.append(" ".join(topic.split()))
    if not out:
        raise InputError("no topics given", field="topics")
    return out
