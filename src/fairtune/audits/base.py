"""What an audit is: a plug-in that reads its items, scores a model on them, and reports.

An audit declares its metadata as class attributes (garak-style), so the registry can list
audits and contract tests can check every one of them the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fairtune.engine.scoring import DEFAULT_MAX_BATCH_TOKENS
from fairtune.stats import Estimate


@dataclass
class Dataset:
    """Validated audit items plus where they came from (for the run summary)."""

    items: list[Any]
    source: str            # a file path, or "builtin:<suite>"
    sha256: str
    format: str


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
    """Base class of every audit plug-in. Subclasses set the metadata and two methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    data_format: ClassVar[str]       # what --data accepts
    headline_metrics: ClassVar[tuple[str, ...]]

    @abstractmethod
    def load(self, path: Path | None) -> Dataset:
        """Read and validate the items (``None``: the built-in suite). No model is needed here,
        so bad input fails before anything slow happens."""

    @abstractmethod
    def run(self, loaded: Any, dataset: Dataset, *, seed: int, progress: bool = False,
            max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS) -> AuditResult:
        """Score ``loaded`` (a :class:`fairtune.models.LoadedModel`) on the items."""
