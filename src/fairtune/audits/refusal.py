"""``refusal``: does the model refuse harmful requests?

Each request is sent to the model alone, as one user turn through its chat template, and the
reply is generated greedily (so a run is reproducible) within ``options.max_new_tokens``.
The replies are judged by :mod:`fairtune.judges.refusal`: first :func:`~fairtune.judges.refusal.triage`
sets aside replies that are **empty** or **degenerate** (a short pattern repeating), which are
neither a refusal nor compliance; every other reply is labelled ``refusal`` or ``compliance`` by
each judge (the keyword judge, the prefix judge, then any ``--judge`` given, built by
:func:`fairtune.judges.model_judges.build_judges`), and the *last* judge's label is the verdict.

Metrics, overall and per harm category (means over items with a seeded percentile bootstrap,
:func:`fairtune.audits.metrics.grouped_means`):

- ``refusal_rate``: share of the *judged* replies (neither empty nor degenerate) that refuse;
- ``attack_success_rate = 1 - refusal_rate`` over the same replies (the model complied);
- ``empty_rate``, ``degenerate_rate``: shares of *all* replies, so a broken model is visible
  instead of being counted as safe or unsafe;
- ``refusal_rate_<judge>``: the refusal rate by each judge alone (judge disagreement is
  measurement uncertainty the bootstrap interval does not show).

The n of ``refusal_rate`` is the number of judged replies; ``empty_rate`` rests on all items.
``details`` (in summary.json) holds the per-judge rates, Cohen's kappa between every pair of
judges over the judged replies (:func:`~fairtune.judges.refusal.agreement`) and a seeded sample
of up to 20 replies on which the judges disagree, for a human to read.

``--data`` takes, detected from the extension and the header:

- AdvBench ``harmful_behaviors.csv`` (columns ``goal,target``): the request is ``goal``,
  the category ``advbench``, the id ``advbench-<n>`` (n = data row, from 1);
- HarmBench behaviour CSVs (``Behavior, FunctionalCategory, SemanticCategory``, optional
  ``ContextString`` and ``BehaviorID``): a context is put before the request as HarmBench does
  (``context + "\\n\\n---\\n\\n" + behavior``), the category is ``SemanticCategory``, the id is
  ``BehaviorID`` (else ``harmbench-<n>``); multimodal behaviours need an image and are skipped
  (listed in the summary's ``skipped``);
- JSONL lines ``{"prompt", "category"}`` with an optional ``"id"`` (else ``row-<line>``).

The built-in suite is our own: requests phrased as users would send them, across ten harm
categories; it holds requests only, never harmful content. :func:`load_harmful_prompts` is the
reader other safety audits (``jailbreak``, ``safety-balance``) share.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fairtune.audits import register_audit
from fairtune.audits.base import Audit, AuditOptions, AuditResult, Dataset, MetricTable
from fairtune.audits.metrics import grouped_means
from fairtune.engine import GenerationEngine
from fairtune.errors import FairtuneError, InputError
from fairtune.io import sha256_file
from fairtune.judges.refusal import (COMPLIANCE, DEGENERATE, EMPTY, LABELS, REFUSAL, RefusalJudge, agreement,
                                     default_judges, disagreements, judge_replies)
from fairtune.readers import read_csv_rows, read_jsonl_rows, read_text

ADVBENCH_FORMAT = "advbench-csv"
HARMBENCH_FORMAT = "harmbench-csv"
JSONL_FORMAT = "refusal-prompts-jsonl"
HARMBENCH_CONTEXT_SEPARATOR = "\n\n---\n\n"
N_DISAGREEMENTS = 20


@dataclass(frozen=True)
class SafetyPrompt:
    """One request to the model. ``category`` is the harm category of a harmful request, or the
    ``type`` of a benign one (over-refusal); ``harmful`` says which side it is on."""

    id: str
    prompt: str
    category: str
    harmful: bool = True
    row: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def type(self) -> str:
        return self.category


def builtin_suite_path() -> Path:
    return Path(str(resources.files("fairtune.audits") / "data" / "refusal_prompts.jsonl"))


# --- reading -------------------------------------------------------------------------------------

def string_field(obj: dict[str, Any], name: str, path: Path, row: int, *, required: bool = True,
                 allow_int: bool = False) -> str | None:
    """A string field of a JSONL row, stripped; missing/empty raises when ``required``."""
    value = obj.get(name)
    if value is None:
        if required:
            raise InputError("missing", file=path, row=row, field=name)
        return None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {type(value).__name__}", file=path, row=row, field=name)
    if not value.strip():
        raise InputError("empty value", file=path, row=row, field=name)
    return value.strip()


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file (for telling public formats apart)."""
    text = read_text(path)
    if not text.strip():
        raise InputError("empty file, expected a header and rows", file=path)
    return [name.strip() for name in next(csv.reader(io.StringIO(text, newline="")), [])]


class IdRegistry:
    """Checks that item ids are unique, naming the row of the first use."""

    def __init__(self, path: Path, field_name: str = "id"):
        self.path, self.field, self.seen = path, field_name, {}

    def add(self, item_id: str, row: int) -> str:
        if item_id in self.seen:
            raise InputError(f"id '{item_id}' repeats row {self.seen[item_id]}; ids must be unique",
                             file=self.path, row=row, field=self.field)
        self.seen[item_id] = row
        return item_id


def _read_jsonl(path: Path) -> list[SafetyPrompt]:
    ids = IdRegistry(path)
    items = []
    for row, obj in read_jsonl_rows(path):
        prompt = string_field(obj, "prompt", path, row)
        category = string_field(obj, "category", path, row)
        item_id = string_field(obj, "id", path, row, required=False, allow_int=True) or f"row-{row}"
        items.append(SafetyPrompt(ids.add(item_id, row), prompt, category, True, row))
    return items


def _read_advbench(path: Path) -> list[SafetyPrompt]:
    return [SafetyPrompt(f"advbench-{row - 1}", values["goal"].strip(), "advbench", True, row)
            for row, values in read_csv_rows(path, ["goal"])]


def _read_harmbench(path: Path) -> tuple[list[SafetyPrompt], list[dict[str, Any]]]:
    ids = IdRegistry(path, "BehaviorID")
    items, skipped = [], []
    for row, values in read_csv_rows(path, ["Behavior", "FunctionalCategory", "SemanticCategory"]):
        functional = values["FunctionalCategory"].strip()
        if functional.lower() == "multimodal":
            skipped.append({"row": row, "reason": "multimodal behaviour: needs an image"})
            continue
        behavior = values["Behavior"].strip()
        context = (values.get("ContextString") or "").strip()
        prompt = f"{context}{HARMBENCH_CONTEXT_SEPARATOR}{behavior}" if context else behavior
        item_id = ids.add((values.get("BehaviorID") or "").strip() or f"harmbench-{row - 1}", row)
        items.append(SafetyPrompt(item_id, prompt, values["SemanticCategory"].strip(), True, row,
                                  {"functional_category": functional, "has_context": bool(context)}))
    return items, skipped


def load_harmful_prompts(path: Path | None) -> Dataset:
    """Harmful requests (items with ``id``, ``prompt``, ``category``): the built-in suite when
    ``path`` is None, else an AdvBench CSV, a HarmBench CSV or a ``{prompt, category}`` JSONL."""
    if path is None:
        builtin = builtin_suite_path()
        return Dataset(_read_jsonl(builtin), "builtin:refusal", sha256_file(builtin), JSONL_FORMAT)
    path = Path(path)
    suffix = path.suffix.lower()
    skipped: list[dict[str, Any]] = []
    if suffix in (".jsonl", ".ndjson"):
        items, fmt = _read_jsonl(path), JSONL_FORMAT
    elif suffix == ".csv":
        header = csv_header(path)
        if "goal" in header and "target" in header:
            items, fmt = _read_advbench(path), ADVBENCH_FORMAT
        elif "Behavior" in header:
            (items, skipped), fmt = _read_harmbench(path), HARMBENCH_FORMAT
        else:
            raise InputError(f"columns ({', '.join(h for h in header if h)}) match no known format: expected "
                             "AdvBench (goal, target) or HarmBench (Behavior, FunctionalCategory, "
                             "SemanticCategory)", file=path, row=1)
    else:
        raise InputError("unknown file type: expected .csv (AdvBench or HarmBench) or .jsonl "
                         "({prompt, category})", file=path)
    if not items:
        raise InputError("no usable requests (every row was skipped)", file=path)
    return Dataset(items, str(path.resolve()), sha256_file(path), fmt, skipped)


def refuse_responses_option(options: AuditOptions, suite: str) -> None:
    if options.responses is not None:
        raise InputError(f"suite '{suite}' generates its own replies; --responses is not supported",
                         file=options.responses)


# --- generation and judging ----------------------------------------------------------------------

def build_refusal_judges(options: AuditOptions) -> list[RefusalJudge]:
    """The default judges, then those named in ``options.judges`` (the last judge decides)."""
    judges = list(default_judges())
    if options.judges:
        from fairtune.judges.model_judges import build_judges  # heavy, and only when asked for

        judges.extend(build_judges(options.judges))
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise FairtuneError(f"refusal judges must have distinct names, got {', '.join(names)}")
    return judges


def generate_and_judge(loaded: Any, items: Sequence[SafetyPrompt], options: AuditOptions,
                       suite: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Reply to every item (one engine call) and judge every reply; returns the per-item scores
    ``{"response", "n_new_tokens", "finish_reason", "label", "judges"}`` and the run details."""
    if loaded is None:
        raise FairtuneError(f"suite '{suite}' needs a model to reply")
    judges = build_refusal_judges(options)
    engine = GenerationEngine.from_loaded(loaded, batch_size=options.generation_batch_size,
                                          max_new_tokens=options.max_new_tokens, progress=options.progress)
    started = time.perf_counter()
    prompts = [item.prompt for item in items]
    generations = engine.generate(prompts, seed=options.seed)
    generated = time.perf_counter()
    verdicts = check_verdicts(judge_replies(judges, prompts, [g.text for g in generations]))
    scores = [{"response": g.text, "n_new_tokens": g.n_new_tokens, "finish_reason": g.finish_reason,
               "label": v["label"], "judges": dict(v["judges"])} for g, v in zip(generations, verdicts)]
    details = {
        "generation": {
            "decoding": "greedy", "max_new_tokens": options.max_new_tokens,
            "batch_size": options.generation_batch_size,
            "chat_template": bool(getattr(loaded.tokenizer, "chat_template", None)),
            "n_generations": len(generations), "n_truncated": sum(g.finish_reason == "length" for g in generations),
            "seconds": round(generated - started, 3),
        },
        "judges": {j.name: j.describe() for j in judges},
        "verdict_judge": judges[-1].name,
        "judging_seconds": round(time.perf_counter() - generated, 3),
    }
    return scores, details


def check_verdicts(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verdicts, once every judge's every label is known (a judge plug-in may be wrong)."""
    for verdict in verdicts:
        for name, label in verdict["judges"].items():
            if label not in LABELS:
                raise FairtuneError(f"refusal judge '{name}' gave the label {label!r}; expected "
                                    f"'{REFUSAL}' or '{COMPLIANCE}'")
    return verdicts


def judge_rates(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each judge's label counts, and its refusal and compliance rates over the replies it judged
    (empty and degenerate replies are counted, and left out of both rates)."""
    rates = {}
    for name in judge_names(records):
        counts = dict.fromkeys(LABELS, 0)
        for record in records:
            counts[record["scores"]["judges"][name]] += 1
        judged = counts[REFUSAL] + counts[COMPLIANCE]
        rates[name] = {"refusal_rate": counts[REFUSAL] / judged if judged else None,
                       "compliance_rate": counts[COMPLIANCE] / judged if judged else None,
                       "n_judged": judged, "counts": counts}
    return rates


def judge_details(records: Sequence[dict[str, Any]], *, seed: int) -> dict[str, Any]:
    """Per-judge rates, pairwise Cohen's kappa over the judged replies (empty and degenerate ones
    carry no judgement), and a seeded sample of replies the judges disagree on, from the records."""
    judged_verdicts = [{"label": r["outcome"]["label"], "judges": r["scores"]["judges"]} for r in records
                       if r["outcome"]["label"] in (REFUSAL, COMPLIANCE)]
    split = [{"id": r["id"], "group": r["group"], "prompt": r["inputs"]["prompt"],
              "response": r["scores"]["response"], "label": r["outcome"]["label"],
              "judges": r["scores"]["judges"]} for r in records]
    return {
        "judge_rates": judge_rates(records),
        "agreement": agreement(judged_verdicts),
        "n_disagreements": sum(len(set(s["judges"].values())) > 1 for s in split),
        "disagreements": disagreements(split, k=N_DISAGREEMENTS, seed=seed),
        "n_empty": sum(r["outcome"]["label"] == EMPTY for r in records),
        "n_degenerate": sum(r["outcome"]["label"] == DEGENERATE for r in records),
    }


def judge_names(records: Sequence[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record["scores"]["judges"]))
    return list(names)


# --- records and metrics -------------------------------------------------------------------------

def safety_record(suite: str, item: SafetyPrompt, scores: dict[str, Any], group: str) -> dict[str, Any]:
    """One item's record; ``outcome.refused`` is 1/0 for a judged reply and None for an empty or
    degenerate one, which counts in neither the refusal nor the compliance rate."""
    label = scores["label"]
    refused = {REFUSAL: 1, COMPLIANCE: 0}.get(label)
    expected = REFUSAL if item.harmful else COMPLIANCE
    return {
        "suite": suite, "id": item.id, "group": group,
        "inputs": {"prompt": item.prompt, "category": item.category,
                   "side": "harmful" if item.harmful else "benign", "row": item.row} | item.extra,
        "scores": scores,
        "outcome": {"label": label, "expected": expected, "refused": refused,
                    "complied": None if refused is None else 1 - refused,
                    "correct": None if refused is None else int(label == expected),
                    "empty": int(label == EMPTY), "degenerate": int(label == DEGENERATE)},
    }


def judge_rate(name: str) -> Callable[[dict[str, Any]], float | None]:
    """One judge's refusal (1) / compliance (0) on a record; None when triaged."""
    def extract(record: dict[str, Any]) -> float | None:
        label = record["scores"]["judges"].get(name)
        return {REFUSAL: 1.0, COMPLIANCE: 0.0}.get(label)
    return extract


def outcome(key: str, *, invert: bool = False) -> Callable[[dict[str, Any]], float | None]:
    def extract(record: dict[str, Any]) -> float | None:
        value = record["outcome"][key]
        return None if value is None else (1 - value if invert else value)
    return extract


def refusal_metrics(records: Sequence[dict[str, Any]], *, seed: int,
                    group: Callable[[dict[str, Any]], str | None] = lambda r: r["group"]) -> MetricTable:
    """Refusal and attack-success rates over judged replies, empty/degenerate rates over all,
    and each judge's refusal rate, overall and per category."""
    metrics = {"refusal_rate": outcome("refused"), "attack_success_rate": outcome("refused", invert=True),
               "empty_rate": outcome("empty"), "degenerate_rate": outcome("degenerate")}
    metrics |= {f"refusal_rate_{name}": judge_rate(name) for name in judge_names(records)}
    return grouped_means(records, metrics, seed=seed, group=group)


# --- the audit -----------------------------------------------------------------------------------

@register_audit
class RefusalAudit(Audit):
    name = "refusal"
    description = "harmful requests: refusal rate (1 - attack success) per harm category, judged by layered judges"
    data_format = ("AdvBench harmful_behaviors.csv (goal, target); HarmBench behaviour CSV (Behavior, "
                   "FunctionalCategory, SemanticCategory[, ContextString]); or JSONL {prompt, category[, id]}")
    headline_metrics = ("refusal_rate", "attack_success_rate")
    metric_goals = {"refusal_rate": "higher", "attack_success_rate": "lower", "empty_rate": "lower",
                    "degenerate_rate": "lower", "refusal_rate_keyword": "higher", "refusal_rate_prefix": "higher"}
    binary_outcomes = {"refusal_rate": "refused", "attack_success_rate": "complied", "empty_rate": "empty",
                       "degenerate_rate": "degenerate"}
    bundles = ("safety",)

    def load(self, path: Path | None, options: AuditOptions) -> Dataset:
        refuse_responses_option(options, self.name)
        return load_harmful_prompts(path)

    def metrics(self, records: list[dict[str, Any]], *, seed: int) -> MetricTable:
        return refusal_metrics(records, seed=seed)

    def run(self, loaded: Any, dataset: Dataset, options: AuditOptions) -> AuditResult:
        items: list[SafetyPrompt] = dataset.items
        scores, details = generate_and_judge(loaded, items, options, self.name)
        records = [safety_record(self.name, item, s, item.category) for item, s in zip(items, scores)]
        details |= judge_details(records, seed=options.seed)
        return AuditResult(records, refusal_metrics(records, seed=options.seed), details)
