"""The audit registry: every module in this package registers its audits here by name.

A new audit is a new module with an ``@register_audit`` class; nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil

from fairtune.audits.base import Audit, AuditOptions, AuditResult, Dataset, MetricTable
from fairtune.errors import FairtuneError

AUDITS: dict[str, type[Audit]] = {}
ALL_BUNDLE = "all"


def register_audit(cls: type[Audit]) -> type[Audit]:
    if cls.name in AUDITS:
        raise ValueError(f"audit '{cls.name}' registered twice")
    AUDITS[cls.name] = cls
    return cls


def get_audit(name: str) -> Audit:
    try:
        return AUDITS[name]()
    except KeyError:
        raise unknown_suite(name) from None


def unknown_suite(name: str) -> FairtuneError:
    return FairtuneError(f"suite '{name}': unknown (audits: {', '.join(sorted(AUDITS))}; "
                         f"bundles: {', '.join(bundle_names())})")


def bundle_names() -> list[str]:
    return sorted({ALL_BUNDLE, *(b for cls in AUDITS.values() for b in cls.bundles)})


def bundle_members(bundle: str) -> list[str]:
    """Audits in a named bundle, in name order (``all``: every audit)."""
    return sorted(name for name, cls in AUDITS.items() if bundle == ALL_BUNDLE or bundle in cls.bundles)


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_discover()

__all__ = ["AUDITS", "Audit", "AuditOptions", "AuditResult", "Dataset", "MetricTable", "bundle_members",
           "bundle_names", "get_audit", "register_audit", "unknown_suite"]
