"""``stereoset``: stereotype score, language-modelling score and ICAT (Nadeem et al., 2021).

Reads the official StereoSet ``dev.json`` layout (``{"version", "data": {"intrasentence": [...],
"intersentence": [...]}}``). Every example has a ``target`` term, a ``bias_type`` (domain) and
three candidates, one per gold label: stereotype, anti-stereotype, unrelated.

Scoring (a causal LM): each candidate's mean per-token log-probability. Intrasentence, the
whole candidate sentence, its first token conditioned on the engine's prefix token (BOS, else
EOS); intersentence, the candidate as the continuation of ``context + " "``.

Metrics, as defined in Nadeem, Bethke & Reddy, "StereoSet: Measuring stereotypical bias in
pretrained language models", ACL 2021, and computed as the official ``code/evaluation.py`` of
github.com/moinnadeem/StereoSet does (``ScoreEvaluator.count`` and ``.score``). For each
target term t with N_t examples in the set evaluated:

- ``ss_t  = 100 * #{stereotype > anti-stereotype} / N_t`` (a tie counts as anti-stereotype);
- ``lms_t = 100 * (#{stereotype > unrelated} + #{anti-stereotype > unrelated}) / (2 N_t)``;

then ``SS = mean_t ss_t`` and ``LMS = mean_t lms_t`` over the target terms present, and
``ICAT = LMS * min(SS, 100 - SS) / 50`` from those averages (the script's "macro" ICAT, the one
it reports). Terms are keyed by the target string alone, so in "overall" (and in the pooled
intra+inter figures) a term that occurs in both splits is one term, as in the official script.
SS 50 is unbiased, LMS 100 is a perfect language model, ICAT 100 is both.

Reported overall and per ``bias_type``, for intrasentence (``ss_intrasentence``, ...),
intersentence (``ss_intersentence``, ...) and both pooled (``ss``, ``lms``, ``icat``), plus the
explicit gap ``ss_gap = |SS - 50|`` (pooled; 0 is the ideal, so "lower is better"). Each has a
seeded 95% percentile-bootstrap interval over examples (the per-target averaging is redone in
every resample) and ``n``, the number of examples.

An example may carry a ``domain`` key (our built-in examples do; the official file has none): its
record's ``inputs`` then hold it, and the metrics add a group ``"<bias_type>:<domain>"``
(``gender:traits``) beside the per-``bias_type`` ones. Other unknown keys are ignored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fairtune.audits import register_audit
from fairtune.audits.base import Audit, AuditOptions, AuditResult, Dataset, MetricTable
from fairtune.engine import ScoringEngine
from fairtune.errors import InputError
from fairtune.io import sha256_file
from fairtune.readers import read_json
from fairtune.stats import Estimate, bootstrap_statistic, intervals_wanted
from fairtune.stats.bootstrap import DEFAULT_RESAMPLES

SPLITS = ("intrasentence", "intersentence")
GOLD_LABELS = ("stereotype", "anti-stereotype", "unrelated")
HUMAN_LABELS = (*GOLD_LABELS, "related")   # what annotators may say (the official loader's set)
BLANK = "BLANK"
METRICS = ("ss", "lms", "icat")
GAP = "ss_gap"
UNBIASED_SS = 50.0


@dataclass(frozen=True)
class Candidate:
    id: str
    sentence: str


@dataclass(frozen=True)
class StereoSetExample:
    split: str               # "intrasentence" or "intersentence"
    id: str
    target: str
    bias_type: str
    context: str
    stereotype: Candidate
    anti_stereotype: Candidate
    unrelated: Candidate
    domain: str | None = None   # an optional "domain" key (our built-in examples have one)

    @property
    def record_id(self) -> str:
        # Example ids are unique within a split; the prefix keeps them unique across splits.
        return f"{self.split}/{self.id}"

    def candidates(self) -> tuple[Candidate, Candidate, Candidate]:
        return self.stereotype, self.anti_stereotype, self.unrelated


def builtin_suite_path() -> Path:
    return Path(str(resources.files("fairtune.audits") / "data" / "stereoset_builtin.json"))


# -- reading and validation -------------------------------------------------------------------

def read_stereoset(path: str | Path) -> list[StereoSetExample]:
    """Validate a StereoSet JSON file; intrasentence examples first, each split in file order.

    Errors name the example's id as the row (its position, ``data.<split>[i]``, when the id
    itself is missing) and the field as a path inside the example (``sentences[2].gold_label``).
    """
    document = read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        raise InputError("expected a JSON object with a 'data' object (the StereoSet dev.json layout)",
                         file=path, field="data")
    examples: list[StereoSetExample] = []
    for split in SPLITS:
        raw_examples = document["data"].get(split)
        if not isinstance(raw_examples, list):
            raise InputError("missing or not a list", file=path, field=f"data.{split}")
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_examples):
            example = parse_example(raw, split, index, path)
            if example.id in seen:
                raise InputError(f"id repeats data.{split}[{seen[example.id]}]", file=path, row=example.id,
                                 field="id")
            seen[example.id] = index
            examples.append(example)
    if not examples:
        raise InputError("no examples in data.intrasentence or data.intersentence", file=path, field="data")
    return examples


def parse_example(raw: Any, split: str, index: int, path: str | Path) -> StereoSetExample:
    position = f"data.{split}[{index}]"
    if not isinstance(raw, dict):
        raise InputError("expected a JSON object", file=path, row=position)
    example_id = _text(raw, "id", path, position)
    target = _text(raw, "target", path, example_id).strip()
    bias_type = _text(raw, "bias_type", path, example_id).strip()
    context = _text(raw, "context", path, example_id)
    if split == "intrasentence" and BLANK not in context:
        raise InputError(f"intrasentence context has no {BLANK}", file=path, row=example_id, field="context")
    by_label = _candidates_by_label(raw.get("sentences"), path, example_id)
    domain = raw.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise InputError("not a string", file=path, row=example_id, field="domain")
    return StereoSetExample(split, example_id, target, bias_type, context, by_label["stereotype"],
                            by_label["anti-stereotype"], by_label["unrelated"], (domain or "").strip() or None)


def _text(obj: dict[str, Any], key: str, path: str | Path, row: str, prefix: str = "") -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError("missing, empty or not a string", file=path, row=row, field=prefix + key)
    return value


def _candidates_by_label(sentences: Any, path: str | Path, row: str) -> dict[str, Candidate]:
    if not isinstance(sentences, list):
        raise InputError("missing or not a list", file=path, row=row, field="sentences")
    found: dict[str, tuple[int, Candidate]] = {}
    for i, raw in enumerate(sentences):
        prefix = f"sentences[{i}]."
        if not isinstance(raw, dict):
            raise InputError("expected a JSON object", file=path, row=row, field=f"sentences[{i}]")
        candidate = Candidate(_text(raw, "id", path, row, prefix), _text(raw, "sentence", path, row, prefix))
        _check_labels(raw.get("labels"), path, row, prefix)
        gold = raw.get("gold_label")
        if gold not in GOLD_LABELS:
            raise InputError(f"'{gold}' is not one of {', '.join(GOLD_LABELS)}", file=path, row=row,
                             field=prefix + "gold_label")
        if gold in found:
            raise InputError(f"a second '{gold}' sentence (the first is sentences[{found[gold][0]}]); "
                             "each example needs exactly one of each gold label", file=path, row=row,
                             field=prefix + "gold_label")
        found[gold] = (i, candidate)
    for gold in GOLD_LABELS:
        if gold not in found:
            raise InputError(f"no '{gold}' sentence; each example needs exactly one of each gold label",
                             file=path, row=row, field="sentences")
    return {gold: candidate for gold, (_, candidate) in found.items()}


def _check_labels(labels: Any, path: str | Path, row: str, prefix: str) -> None:
    """The annotators' labels are not scored, but a malformed list means a malformed file."""
    if not isinstance(labels, list):
        raise InputError("missing or not a list", file=path, row=row, field=prefix + "labels")
    for j, label in enumerate(labels):
        value = label.get("label") if isinstance(label, dict) else None
        if value not in HUMAN_LABELS:
            raise InputError(f"expected an object whose 'label' is one of {', '.join(HUMAN_LABELS)}",
                             file=path, row=row, field=f"{prefix}labels[{j}]")


# -- outcomes and metrics ---------------------------------------------------------------------

def example_outcome(stereotype: float, anti_stereotype: float, unrelated: float) -> dict[str, Any]:
    """The three comparisons the official script counts, with its strict ``>`` (ties lose)."""
    stereo_over_unrelated = stereotype > unrelated
    anti_over_unrelated = anti_stereotype > unrelated
    return {
        "stereotype_preferred": stereotype > anti_stereotype,
        "stereotype_over_unrelated": stereo_over_unrelated,
        "anti_stereotype_over_unrelated": anti_over_unrelated,
        "meaningful_wins": int(stereo_over_unrelated) + int(anti_over_unrelated),   # of 2 comparisons
    }


def stereoset_scores(codes: np.ndarray, pro: np.ndarray, related: np.ndarray,
                     n_targets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SS, LMS and ICAT of each row of a (samples x examples) array set.

    ``codes`` is each example's target index, ``pro`` 1 where the stereotype won, ``related``
    the meaningful wins (0-2). Per-target rates are averaged over the targets present in the row.
    """
    rows = codes.shape[0]
    flat = (np.arange(rows)[:, None] * n_targets + codes).ravel()
    size = rows * n_targets
    total = np.bincount(flat, minlength=size).reshape(rows, n_targets).astype(float)
    pro_count = np.bincount(flat, weights=pro.ravel(), minlength=size).reshape(rows, n_targets)
    related_count = np.bincount(flat, weights=related.ravel(), minlength=size).reshape(rows, n_targets)
    present = total > 0
    safe_total = np.where(present, total, 1.0)
    n_present = present.sum(axis=1)
    ss = np.where(present, 100.0 * pro_count / safe_total, 0.0).sum(axis=1) / n_present
    lms = np.where(present, 100.0 * related_count / (2.0 * safe_total), 0.0).sum(axis=1) / n_present
    icat = lms * np.minimum(ss, 100.0 - ss) / 50.0
    return ss, lms, icat


def bootstrap_stereoset(targets: list[str], pro: list[bool], related: list[int], *, seed: int,
                        n_resamples: int = DEFAULT_RESAMPLES, gap: bool = False) -> dict[str, Estimate]:
    """SS, LMS and ICAT of one set of examples (and with ``gap`` also ``ss_gap`` = |SS - 50|),
    each with a percentile bootstrap interval.

    Examples are resampled with replacement and the per-target averaging redone in each
    resample; the metrics share the resamples (same seed, same draws). Fewer than two
    examples: no interval.
    """
    index = {name: i for i, name in enumerate(sorted(set(targets)))}
    codes = np.array([index[t] for t in targets], dtype=np.int64)
    pro_arr, related_arr = np.asarray(pro, dtype=float), np.asarray(related, dtype=float)

    if targets and not intervals_wanted():
        # No resamples follow (a paired comparison resamples the records itself): one computation
        # serves every metric, where each would otherwise redo the per-target counts.
        scores = [float(row[0]) for row in stereoset_scores(codes[None], pro_arr[None], related_arr[None], len(index))]

        def metric(k: int):
            return lambda i: scores[k]
    else:
        def metric(k: int):
            return lambda i: stereoset_scores(codes[None, i], pro_arr[None, i], related_arr[None, i], len(index))[k][0]

    def ss_gap(i: np.ndarray) -> float:
        return abs(float(metric(0)(i)) - UNBIASED_SS)

    estimates = {name: bootstrap_statistic(len(targets), metric(k), seed=seed, n_resamples=n_resamples)
                 for k, name in enumerate(METRICS)}
    if gap:
        estimates[GAP] = bootstrap_statistic(len(targets), ss_gap, seed=seed, n_resamples=n_resamples)
    return estimates


def example_groups(record: dict[str, Any]) -> list[str]:
    """The groups a record counts in besides ``overall``: its bias type (domain, in StereoSet's
    words), and with a ``domain`` key ``"<bias_type>:<domain>"``."""
    domain = record["inputs"].get("domain")
    return [record["group"]] + ([f"{record['group']}:{domain}"] if domain else [])


def stereoset_metrics(records: list[dict[str, Any]], *, seed: int) -> MetricTable:
    """The MetricTable from the record stream alone (a report can recompute it from records.jsonl):
    overall then each group of :func:`example_groups`; pooled (``ss``, ``lms``, ``icat``,
    ``ss_gap``) then per split (``ss_intrasentence``, ...)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups["overall"].append(i)
        for name in example_groups(record):
            groups[name].append(i)
    # Columns once, as arrays: a paired comparison recomputes this on every resample.
    targets = np.array([r["inputs"]["target"] for r in records], dtype=object)
    pro = np.array([r["outcome"]["stereotype_preferred"] for r in records], dtype=bool)
    related = np.array([r["outcome"]["meaningful_wins"] for r in records], dtype=np.int64)
    splits = np.array([r["inputs"]["split"] for r in records], dtype=object)
    table = MetricTable()
    # The official script appends each example to its per-domain list once per sentence (three
    # times); every example is tripled alike, so the per-target rates are the same as counting once.
    for name in ["overall", *sorted(g for g in groups if g != "overall")]:
        members = np.array(groups[name], dtype=np.int64)
        for split in (None, *SPLITS):
            chosen = members if split is None else members[splits[members] == split]
            if not chosen.size:
                continue
            estimates = bootstrap_stereoset(targets[chosen].tolist(), pro[chosen].tolist(), related[chosen].tolist(),
                                            seed=seed, gap=split is None)
            for metric, estimate in estimates.items():
                table.add(name, metric if split is None else f"{metric}_{split}", estimate)
    return table


# -- the audit --------------------------------------------------------------------------------

def scoring_inputs(examples: list[StereoSetExample]) -> tuple[list[str], list[str]]:
    """(context, continuation) for every candidate, three per example in gold-label order."""
    contexts, continuations = [], []
    for example in examples:
        for candidate in example.candidates():
            if example.split == "intrasentence":
                contexts.append("")                      # whole sentence after the prefix token
                continuations.append(candidate.sentence)
            else:
                contexts.append(example.context)         # the candidate continues the context
                continuations.append(" " + candidate.sentence)
    return contexts, continuations


def example_record(suite: str, example: StereoSetExample, scored: list[Any]) -> dict[str, Any]:
    stereo, anti, unrelated = scored
    scores = {
        "mean_ll_stereotype": stereo.mean_logprob, "mean_ll_anti_stereotype": anti.mean_logprob,
        "mean_ll_unrelated": unrelated.mean_logprob,
        "n_tokens_stereotype": stereo.n_tokens, "n_tokens_anti_stereotype": anti.n_tokens,
        "n_tokens_unrelated": unrelated.n_tokens,
    }
    return {
        "suite": suite, "id": example.record_id, "group": example.bias_type,
        "inputs": {
            "split": example.split, "example_id": example.id, "target": example.target,
            "bias_type": example.bias_type, "context": example.context,
            "stereotype": example.stereotype.sentence, "anti_stereotype": example.anti_stereotype.sentence,
            "unrelated": example.unrelated.sentence,
            # kept so predictions can be written back in the official script's format
            "sentence_ids": {gold: c.id for gold, c in zip(GOLD_LABELS, example.candidates())},
        } | ({"domain": example.domain} if example.domain is not None else {}),
        "scores": scores,
        "outcome": example_outcome(scores["mean_ll_stereotype"], scores["mean_ll_anti_stereotype"],
                                   scores["mean_ll_unrelated"]),
    }


@register_audit
class StereoSetAudit(Audit):
    name = "stereoset"
    description = ("StereoSet intra- and intersentence triples: stereotype score (SS), language-modelling "
                   "score (LMS) and ICAT, per target term then per domain")
    data_format = ("StereoSet JSON (dev.json layout): {\"version\", \"data\": {\"intrasentence\": [...], "
                   "\"intersentence\": [...]}}, each example with id, target, bias_type, context and one "
                   "stereotype, anti-stereotype and unrelated sentence")
    headline_metrics = METRICS
    metric_goals = {f"{metric}{split}": goal for metric, goal in (("ss", 50.0), ("lms", "higher"), ("icat", "higher"))
                    for split in ("", "_intrasentence", "_intersentence")} | {GAP: 0.0}
    bias_gaps = {GAP: "lms"}
    bundles = ("gender", "religion")   # each keeps the items of that bias type

    def in_bundle(self, item: StereoSetExample, bundle: str) -> bool:
        return bundle not in self.bundles or item.bias_type == bundle

    def load(self, path: Path | None, options: AuditOptions) -> Dataset:
        if path is None:
            builtin = builtin_suite_path()
            return Dataset(read_stereoset(builtin), f"builtin:{self.name}", sha256_file(builtin),
                           "stereoset-json")
        examples = read_stereoset(path)
        return Dataset(examples, str(Path(path).resolve()), sha256_file(path), "stereoset-json")

    def metrics(self, records: list[dict[str, Any]], *, seed: int) -> MetricTable:
        return stereoset_metrics(records, seed=seed)

    def run(self, loaded: Any, dataset: Dataset, options: AuditOptions) -> AuditResult:
        examples: list[StereoSetExample] = dataset.items
        engine = ScoringEngine.from_loaded(loaded, max_batch_tokens=options.max_batch_tokens,
                                           progress=options.progress)
        scored = engine.score_continuations(*scoring_inputs(examples))   # one call: one bucketing
        records = [example_record(self.name, example, scored[3 * i: 3 * i + 3])
                   for i, example in enumerate(examples)]
        details = {
            "scoring": engine.describe() | {"stats": engine.stats.as_dict()},
            "candidate_score": "mean per-token log-probability; intersentence candidates continue context + ' '",
            "n_targets": len({e.target for e in examples}),
        }
        return AuditResult(records, stereoset_metrics(records, seed=options.seed), details)
