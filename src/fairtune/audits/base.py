"""What an audit is: a plug-in that reads its items, scores a model on them, and reports.

An audit declares its metadata as class attributes (garak-style), so the registry can list
audits, bundles can pick them up, and contract tests check every one of them the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from fairtune.engine.generation import DEFAULT_GENERATION_BATCH
from fairtune.engine.scoring import DEFAULT_MAX_BATCH_TOKENS
from fairtune.stats import Estimate


@dataclass
class AuditOptions:
    """Settings every audit receives; each audit reads the ones it needs."""

    seed: int = 0
    progress: bool = False
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_new_tokens: int = 48          # generation budget for generative audits
    generation_batch_size: int = DEFAULT_GENERATION_BATCH
    reference: Any = None             # a LoadedModel to compare against (capability drift)
    responses: Path | None = None     # outputs the user already has (counterfactual)
    judges: tuple[str, ...] = ()      # extra refusal judges, e.g. "model:/path" (safety audits)
    toxicity_scorer: str | None = None  # "profanity" (default), "classifier:/path", "detoxify:/path"
    samples: int = 1                  # generations per prompt where an audit samples (toxicity)
    system_prompt: str | None = None  # only for audits that declare accepts_system_prompt


@dataclass
class Dataset:
    """Validated audit items plus where they came from (for the run summary).

    ``skipped`` lists items deliberately left out, each ``{"row": ..., "reason": ...}``:
    nothing is dropped silently, and the summary counts them.
    """

    items: list[Any]
    source: str            # a file path, or "builtin:<suite>"
    sha256: str
    format: str
    skipped: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)   # how generated items were made


@dataclass
class MetricTable:
    """Estimates by group: ``{"overall": {...}, "gender": {...}}``, each ``{metric: Estimate}``."""

    groups: dict[str, dict[str, Estimate]] = field(default_factory=dict)

    def add(self, group: str, metric: str, estimate: Estimate) -> None:
        self.groups.setdefault(group, {})[metric] = estimate

    def as_dict(self) -> dict[str, dict[str, dict]]:
        return {g: {m: e.as_dict() for m, e in metrics.items()} for g, metrics in self.groups.items()}


@dataclass
class AuditResult:
    """An audit's output: one record per item, and the metrics derived from those records."""

    records: list[dict[str, Any]]
    metrics: MetricTable
    details: dict[str, Any] = field(default_factory=dict)


class Audit(ABC):
    """Base class of every audit plug-in. Subclasses set the metadata and implement load/run.

    Records are dicts with the keys ``suite``, ``id``, ``group``, ``inputs``, ``scores`` and
    ``outcome``; ids are stable across runs of the same data so runs can be paired.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    data_format: ClassVar[str]                    # what --data accepts
    headline_metrics: ClassVar[tuple[str, ...]]
    bundles: ClassVar[tuple[str, ...]] = ()       # named bundles besides "all", e.g. ("gender",)
    # The mappings below default to read-only empties: a subclass that forgot to define its own and
    # wrote into the inherited one would otherwise change every audit's.
    accepts_system_prompt: ClassVar[bool] = False  # honours AuditOptions.system_prompt
    # Which way each metric should move, for ``fairtune compare``: "higher", "lower", or the ideal
    # value itself (closer is better: 0.5 for a share of stereotyped pairs, 0 for a bias score).
    # A metric left out has no agreed direction, and a change in it is reported as "unknown".
    metric_goals: ClassVar[Mapping[str, str | float]] = MappingProxyType({})
    # Metrics that are the mean of a 0/1 ``outcome`` field over the records they cover, mapped to
    # that field (refusal_rate -> "refused"): paired runs then test them with McNemar's test.
    binary_outcomes: ClassVar[Mapping[str, str]] = MappingProxyType({})
    # The bias audit's explicit gap metrics (each with goal 0: an absolute distance from no bias),
    # mapped to the task-accuracy metric to show beside it, or None where the audit measures no
    # task accuracy: a paired comparison's interval on the gap says whether "the gap shrank",
    # and the accuracy beside it whether it shrank because the model got worse at the task.
    bias_gaps: ClassVar[Mapping[str, str | None]] = MappingProxyType({})

    @abstractmethod
    def load(self, path: Path | None, options: AuditOptions) -> Dataset:
        """Read and validate the items (``None``: the built-in suite). No model is needed here,
        so bad input fails before anything slow happens."""

    @abstractmethod
    def run(self, loaded: Any, dataset: Dataset, options: AuditOptions) -> AuditResult:
        """Score ``loaded`` (a :class:`fairtune.models.LoadedModel`, or ``None`` when
        :meth:`needs_model` says so) on the items."""

    @abstractmethod
    def metrics(self, records: list[dict[str, Any]], *, seed: int) -> MetricTable:
        """The metric table of ``records`` alone (what :meth:`run` reports), so that comparisons
        and reports can recompute it on resampled or paired records."""

    def cluster(self, record: dict[str, Any]) -> str:
        """The unit a paired comparison resamples: records that share it move together (a
        series' forecast origins; a prompt's variants). Default: each record on its own."""
        return str(record["id"])

    def needs_model(self, dataset: Dataset, options: AuditOptions) -> bool:
        return True

    def in_bundle(self, item: Any, bundle: str) -> bool:
        """Whether ``item`` belongs to a named bundle this audit joins (e.g. gender items only)."""
        return True

    def subset(self, dataset: Dataset, bundle: str) -> Dataset:
        """The dataset restricted to the bundle's items (``all`` keeps everything)."""
        if bundle == "all":
            return dataset
        items = [item for item in dataset.items if self.in_bundle(item, bundle)]
        return Dataset(items, dataset.source, dataset.sha256, dataset.format, dataset.skipped, dataset.settings)
