"""``capability``: has the model kept its general language ability while it was debiased?

Fine-tuning a model to remove a bias can quietly damage everything else it could do
(catastrophic forgetting). This audit measures that cost in two ways, so a debiased model
can be shown to be *only* less biased:

1. **Perplexity on held-out text.** Each passage is scored whole through the shared
   :class:`~fairtune.engine.ScoringEngine` (first token conditioned on the prefix token).
   Over a set of passages with token NLLs ``nll_it`` and token counts ``T_i``:

   - ``mean_nll = sum_i sum_t nll_it / sum_i T_i`` (nats per token);
   - ``perplexity = exp(mean_nll)``: a corpus-level ratio, as lm-evaluation-harness computes
     word/token perplexity, not a mean of per-passage perplexities (which would let short
     passages count as much as long ones).

2. **Drift from a reference model** (``options.reference``, e.g. the model before tuning),
   the forgetting signal when no general corpus is at hand. The reference replies greedily
   to neutral prompts of our own (chat template, ``options.max_new_tokens`` tokens); at every
   token of each reply both models predict the next token from the same prompt + reply
   prefix, and

   - ``kl_to_reference = sum KL_t / number of positions``, with
     ``KL_t = sum_v p_ref(v) * (log p_ref(v) - log p_audited(v))`` (nats), i.e.
     KL(reference || audited): how surprised the audited model is by what the reference
     would say, weighted by how likely the reference finds it;
   - ``pct_argmax_differs``: the share of those positions where the two models' most likely
     next tokens differ (a fraction in [0, 1], like every ``pct_`` metric).

   A model audited against itself scores exactly 0 on both. The positions are the reply's
   tokens as the scorer re-tokenises its text: the generation engine strips whitespace
   around a reply, and the end-of-turn token is not scored. A reply that strips to nothing
   keeps its record, marked unmeasured, and counts in no drift metric.

All four are ratios of sums, not means of per-item values, so their 95% intervals come from
a seeded percentile bootstrap that resamples whole items (passages, prompts), keeping each
item's tokens together: tokens of one passage are not independent draws. Perplexity and
mean NLL share their resamples, so one interval is the exponential of the other.

Metrics are reported overall and per passage topic (perplexity and mean NLL); the drift
metrics exist only when a reference is given, and only overall (topic rows hold empty
estimates for them so that every group has the same columns). Records: one per passage
(group = its topic) and, with a reference, one per drift prompt (group ``drift``), from
which every metric can be recomputed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fairtune.audits import register_audit
from fairtune.audits.base import Audit, AuditOptions, AuditResult, Dataset, MetricTable
from fairtune.engine import GenerationEngine, ScoringEngine
from fairtune.errors import InputError
from fairtune.io import sha256_file
from fairtune.readers import read_jsonl_rows, read_text
from fairtune.stats import Estimate, bootstrap_statistic

SUITE = "capability"
# 24 passages of 60-70 words on 8 everyday topics: short enough that each fits even the
# tests' tiny model (a 256-position window over a ~380-token BPE, ~3.5 tokens a word).
PASSAGES_FILE = "capability_passages.jsonl"
PROMPTS_FILE = "capability_prompts.jsonl"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Formats a user may plausibly pass by mistake; read as plain text they would be scored as
# JSON or CSV syntax, which gives a perplexity but not the one they meant.
REFUSED_SUFFIXES = (".json", ".csv", ".tsv")
PLAIN_TEXT_TOPIC = "text"
DRIFT_GROUP = "drift"
DRIFT_ID_PREFIX = "drift-"
NO_REFERENCE = "no reference model given"
EMPTY_REPLY = "the reference model's reply was empty"


@dataclass(frozen=True)
class Passage:
    """A held-out text, scored whole. ``row`` is where it starts in its file."""

    id: str
    topic: str
    text: str
    row: int


@dataclass(frozen=True)
class DriftPrompt:
    """A neutral user message the reference model replies to."""

    id: str
    prompt: str


# -- reading ------------------------------------------------------------------------------


def builtin_path(name: str) -> Path:
    return Path(str(resources.files("fairtune.audits") / "data" / name))


def read_passages(path: str | Path) -> tuple[list[Passage], str]:
    """Passages and the format name: JSONL with a ``text`` field (optional ``id``, ``topic``)
    for ``.jsonl``/``.ndjson`` files, otherwise plain text with blank lines between passages."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise InputError(f"'{suffix}' files are not read: give JSONL with a 'text' field (.jsonl) or plain "
                         "text with passages separated by blank lines", file=path)
    if suffix in JSONL_SUFFIXES:
        return read_jsonl_passages(path), "jsonl"
    return read_plain_passages(path), "plain-text"


def read_plain_passages(path: Path) -> list[Passage]:
    """Runs of non-blank lines are passages (a whitespace-only line is blank). A passage keeps
    its inner line breaks; ids are ``passage-<k>`` in file order, topics ``text``."""
    text = _decoded(path, jsonl=False)
    blocks: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if blocks and blocks[-1][0] + len(blocks[-1][1]) == number:
            blocks[-1][1].append(line)
        else:
            blocks.append((number, [line]))
    if not blocks:
        raise InputError("empty file, expected passages separated by blank lines", file=path)
    return [Passage(f"passage-{k}", PLAIN_TEXT_TOPIC, "\n".join(lines).strip(), row)
            for k, (row, lines) in enumerate(blocks, start=1)]


def read_jsonl_passages(path: Path) -> list[Passage]:
    """One object per line with a non-empty string ``text``, scored exactly as written;
    ``id`` (default ``line-<n>``) and ``topic`` (default ``text``) are optional."""
    _decoded(path, jsonl=True)
    passages, seen = [], {}
    for row, obj in read_jsonl_rows(path, ("text",)):
        text = obj["text"]
        if not isinstance(text, str):
            raise InputError(f"expected a string, got {_json_type(text)}", file=path, row=row, field="text")
        passage_id = _optional_name(obj, "id", path, row) or f"line-{row}"
        topic = _optional_name(obj, "topic", path, row) or PLAIN_TEXT_TOPIC
        if passage_id in seen:
            raise InputError(f"id '{passage_id}' repeats row {seen[passage_id]}", file=path, row=row, field="id")
        if passage_id.startswith(DRIFT_ID_PREFIX):
            raise InputError(f"ids starting '{DRIFT_ID_PREFIX}' are reserved for drift records",
                             file=path, row=row, field="id")
        if topic == DRIFT_GROUP:
            raise InputError(f"topic '{DRIFT_GROUP}' is reserved for drift records", file=path, row=row,
                             field="topic")
        seen[passage_id] = row
        passages.append(Passage(passage_id, topic, text, row))
    return passages


def read_prompts(path: Path) -> list[DriftPrompt]:
    """The drift prompts: JSONL with ``id`` and ``prompt``, ids unique."""
    prompts, seen = [], {}
    for row, obj in read_jsonl_rows(path, ("id", "prompt")):
        prompt_id = _optional_name(obj, "id", path, row)
        if not isinstance(obj["prompt"], str):
            raise InputError(f"expected a string, got {_json_type(obj['prompt'])}", file=path, row=row,
                             field="prompt")
        if prompt_id in seen:
            raise InputError(f"id '{prompt_id}' repeats row {seen[prompt_id]}", file=path, row=row, field="id")
        seen[prompt_id] = row
        prompts.append(DriftPrompt(str(prompt_id), obj["prompt"]))
    return prompts


def _optional_name(obj: dict[str, Any], field: str, path: Path, row: int) -> str | None:
    """A string or integer naming something (an id, a topic); absent is ``None``."""
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"expected a string or integer, got {_json_type(value)}", file=path, row=row, field=field)
    name = str(value).strip()
    if not name:
        raise InputError("empty value", file=path, row=row, field=field)
    return name


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _decoded(path: Path, *, jsonl: bool) -> str:
    """The file's text. ``read_text`` names an undecodable byte's field from a CSV header,
    which means nothing here: the field is the passage text, or the JSON key holding the byte."""
    try:
        return read_text(path)
    except InputError as exc:
        if exc.row is None:
            raise
        field = _jsonl_field_holding_bad_byte(path, exc.row) if jsonl else "text"
        raise InputError(exc.reason, file=path, row=exc.row, field=field) from None


def _jsonl_field_holding_bad_byte(path: Path, row: int) -> str | None:
    line = path.read_bytes().split(b"\n")[row - 1].decode("utf-8", errors="replace")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    return next((key for key, value in obj.items() if isinstance(value, str) and "\ufffd" in value), None)


# -- records ------------------------------------------------------------------------------


def passage_record(passage: Passage, n_tokens: int, total_logprob: float) -> dict[str, Any]:
    return {
        "suite": SUITE, "id": passage.id, "group": passage.topic,
        "inputs": {"text": passage.text, "topic": passage.topic},
        "scores": {"n_tokens": n_tokens, "total_logprob": total_logprob},
        "outcome": {"mean_nll": -total_logprob / n_tokens,
                    "perplexity": _finite(math.exp(min(-total_logprob / n_tokens, 700.0)))},
    }


def drift_record(prompt: DriftPrompt, reply: str, finish_reason: str, kl: Sequence[float],
                 same_argmax: Sequence[bool]) -> dict[str, Any]:
    """One prompt's drift; an empty reply has no positions and is kept, marked unmeasured."""
    n = len(kl)
    differs = sum(not same for same in same_argmax)
    outcome: dict[str, Any] = {"measured": n > 0, "mean_kl": sum(kl) / n if n else None,
                               "argmax_differs": differs / n if n else None}
    if not n:
        outcome["reason"] = EMPTY_REPLY
    return {
        "suite": SUITE, "id": DRIFT_ID_PREFIX + prompt.id, "group": DRIFT_GROUP,
        "inputs": {"prompt": prompt.prompt, "continuation": reply, "finish_reason": finish_reason},
        "scores": {"n_tokens": n, "total_kl": float(sum(kl)), "n_argmax_differs": differs,
                   "kl": list(kl), "same_argmax": list(same_argmax)},
        "outcome": outcome,
    }


# -- metrics ------------------------------------------------------------------------------


def ratio_estimate(numerators: Sequence[float], denominators: Sequence[float], *, seed: int,
                   transform: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> Estimate:
    """``transform(sum(numerators) / sum(denominators))`` with a 95% percentile bootstrap
    interval that resamples items (numerator and denominator together), seeded."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    return bootstrap_statistic(int(num.size), lambda i: _finite(float(transform(num[i].sum() / den[i].sum()))),
                               seed=seed)


def capability_metrics(records: Sequence[dict[str, Any]], *, seed: int) -> MetricTable:
    """Metrics from the record stream alone, so a report can recompute them from records.jsonl."""
    passages = [r for r in records if r["group"] != DRIFT_GROUP]
    drift = [r for r in records if r["group"] == DRIFT_GROUP]
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in passages:
        by_topic[record["group"]].append(record)
    table = MetricTable()
    for group in ["overall", *sorted(by_topic)]:
        members = passages if group == "overall" else by_topic[group]
        nll = [-r["scores"]["total_logprob"] for r in members]
        tokens = [r["scores"]["n_tokens"] for r in members]
        table.add(group, "perplexity", ratio_estimate(nll, tokens, seed=seed, transform=_safe_exp))
        table.add(group, "mean_nll", ratio_estimate(nll, tokens, seed=seed))
        if drift:
            for metric, estimate in _drift_metrics(drift, seed).items():
                # Every group carries the same metrics (tables print one column per metric);
                # drift is not split by topic, so topic rows hold an empty estimate.
                table.add(group, metric, estimate if group == "overall" else Estimate(None, None, None, 0))
    return table


def _drift_metrics(records: Sequence[dict[str, Any]], seed: int) -> dict[str, Estimate]:
    measured = [r for r in records if r["scores"]["n_tokens"] > 0]
    positions = [r["scores"]["n_tokens"] for r in measured]
    return {
        "kl_to_reference": ratio_estimate([r["scores"]["total_kl"] for r in measured], positions, seed=seed),
        "pct_argmax_differs": ratio_estimate([r["scores"]["n_argmax_differs"] for r in measured], positions,
                                             seed=seed),
    }


def _safe_exp(x: np.ndarray) -> np.ndarray:
    # A broken model can reach NLLs whose exponential overflows; clip rather than emit inf.
    return np.exp(np.minimum(x, 700.0))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# -- the audit ----------------------------------------------------------------------------


@register_audit
class CapabilityAudit(Audit):
    name = SUITE
    description = ("general ability kept after tuning: perplexity on held-out text, and KL drift from a "
                   "reference model on its own replies")
    data_format = ("plain text with passages separated by blank lines, or JSONL (.jsonl) with a 'text' field "
                   "(optional 'id', 'topic')")
    headline_metrics = ("perplexity", "kl_to_reference")
    metric_goals = {"perplexity": "lower", "mean_nll": "lower", "kl_to_reference": "lower",
                    "pct_argmax_differs": "lower"}

    def load(self, path: Path | None, options: AuditOptions) -> Dataset:
        # The drift prompts are always ours; they are loaded (and checked) even when no
        # reference is given, because the runner sets the reference only after loading.
        prompts = read_prompts(builtin_path(PROMPTS_FILE))
        if path is None:
            builtin = builtin_path(PASSAGES_FILE)
            passages, _ = read_passages(builtin)
            return Dataset([*passages, *prompts], f"builtin:{self.name}", sha256_file(builtin), "jsonl")
        passages, fmt = read_passages(path)
        return Dataset([*passages, *prompts], str(Path(path).resolve()), sha256_file(path), fmt)

    def metrics(self, records: list[dict[str, Any]], *, seed: int) -> MetricTable:
        return capability_metrics(records, seed=seed)

    def run(self, loaded: Any, dataset: Dataset, options: AuditOptions) -> AuditResult:
        passages = [item for item in dataset.items if isinstance(item, Passage)]
        prompts = [item for item in dataset.items if isinstance(item, DriftPrompt)]
        engine = _scorer(loaded, options)
        if options.reference is not None:
            # Separate engines keep the drift pass's work apart from the perplexity pass's.
            audited, reference = _scorer(loaded, options), _scorer(options.reference, options)
            audited.kl_from(reference, [], [])  # no items: checks the shared tokenizer before any work
        _check_window(passages, loaded, dataset.source)
        scored = engine.score_texts([p.text for p in passages])
        records = [passage_record(p, s.n_tokens, s.total_logprob) for p, s in zip(passages, scored)]
        details: dict[str, Any] = {
            "perplexity": {"passages": len(passages), "tokens": sum(s.n_tokens for s in scored)},
            "scoring": engine.describe() | {"stats": engine.stats.as_dict()},
        }
        if options.reference is None:
            details["drift"] = NO_REFERENCE
        else:
            drift, details["drift"] = measure_drift(audited, reference, options.reference, prompts, options)
            records += drift
        return AuditResult(records, capability_metrics(records, seed=options.seed), details)


def _check_window(passages: Sequence[Passage], loaded: Any, source: str) -> None:
    """Name the passage that does not fit the model's context, by file and row, before scoring."""
    window = getattr(loaded.model.config, "max_position_embeddings", None)
    if not window:
        return
    for passage in passages:
        n = len(loaded.tokenizer(passage.text, add_special_tokens=False)["input_ids"]) + 1  # + prefix token
        if n > window:
            raise InputError(f"{n} tokens with the prefix token, more than the model's {window}-token window; "
                             "split it into shorter passages", file=source, row=passage.row, field="text")


def _scorer(loaded: Any, options: AuditOptions) -> ScoringEngine:
    return ScoringEngine.from_loaded(loaded, max_batch_tokens=options.max_batch_tokens, progress=options.progress)


def measure_drift(audited: ScoringEngine, reference: ScoringEngine, reference_loaded: Any,
                  prompts: Sequence[DriftPrompt], options: AuditOptions) -> tuple[list[dict[str, Any]], dict]:
    """The reference replies greedily; both models are then compared at every reply token."""
    generator = GenerationEngine.from_loaded(reference_loaded, batch_size=options.generation_batch_size,
                                             max_new_tokens=options.max_new_tokens, progress=options.progress)
    replies = generator.generate([p.prompt for p in prompts], seed=options.seed)
    replied = [i for i, reply in enumerate(replies) if reply.text]
    divergences = audited.kl_from(reference, [replies[i].prompt_text for i in replied],
                                  [replies[i].text for i in replied])
    per_prompt: dict[int, tuple[list[float], list[bool]]] = {i: ([], []) for i in range(len(prompts))}
    for i, divergence in zip(replied, divergences):
        # The scorer moves the prompt's trailing whitespace (the template's newline after
        # "assistant") into the continuation; that position was prompt, not reply, so it goes.
        start = _prompt_tail_tokens(audited.tokenizer, divergence.token_ids,
                                    divergence.context[len(divergence.context.rstrip()):])
        per_prompt[i] = (divergence.kl[start:], divergence.same_argmax[start:])
    records = [drift_record(p, r.text, r.finish_reason, *per_prompt[i])
               for i, (p, r) in enumerate(zip(prompts, replies))]
    prompts_file = builtin_path(PROMPTS_FILE)
    details = {
        "prompts": f"builtin:{PROMPTS_FILE}", "prompts_sha256": sha256_file(prompts_file),
        "n_prompts": len(prompts), "n_measured": sum(r["outcome"]["measured"] for r in records),
        "unmeasured": [{"id": r["id"], "reason": r["outcome"]["reason"]} for r in records
                       if not r["outcome"]["measured"]],
        "positions": sum(r["scores"]["n_tokens"] for r in records),
        "max_new_tokens": options.max_new_tokens, "decoding": "greedy, chat template",
        "divergence": "KL(reference || audited), nats per reply token",
        "scoring": audited.describe() | {"stats": audited.stats.as_dict()},
        "reference_dtype": reference.describe()["dtype"],
    }
    return records, details


def _prompt_tail_tokens(tokenizer: Any, token_ids: Sequence[int], tail: str) -> int:
    """How many leading continuation tokens decode to nothing beyond ``tail`` (the prompt's
    trailing whitespace). A token that merges the tail with reply text is kept."""
    count = 0
    while count < len(token_ids) and len(tokenizer.decode(token_ids[: count + 1])) <= len(tail):
        count += 1
    return count
