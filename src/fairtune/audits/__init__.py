"""The audit registry: every audit registers itself here under its suite name."""

from __future__ import annotations

from fairtune.audits.base import Audit, AuditResult, Dataset, MetricTable
from fairtune.errors import FairtuneError

AUDITS: dict[str, type[Audit]] = {}


def register_audit(cls: type[Audit]) -> type[Audit]:
    if cls.name in AUDITS:
        raise ValueError(f"audit '{cls.name}' registered twice")
    AUDITS[cls.name] = cls
    return cls


def get_audit(name: str) -> Audit:
    try:
        return AUDITS[name]()
    except KeyError:
        raise FairtuneError(f"suite '{name}': unknown (known suites: {', '.join(sorted(AUDITS))})") from None


# Importing the plug-in modules registers them.
from fairtune.audits import stereotype_pairs  # noqa: E402,F401

__all__ = ["AUDITS", "Audit", "AuditResult", "Dataset", "MetricTable", "get_audit", "register_audit"]
