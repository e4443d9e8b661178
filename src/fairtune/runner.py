"""Run audits end to end: validate, load, score, write ``records.jsonl`` and ``summary.json``.

The order is deliberate: the suite name, the output directory and the input data are all
checked before the model loads, so bad input fails in a second and writes nothing.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fairtune.audits import (AUDITS, Audit, AuditOptions, Dataset, bundle_members, bundle_names, get_audit,
                             unknown_suite)
from fairtune.engine.scoring import DEFAULT_MAX_BATCH_TOKENS
from fairtune.errors import FairtuneError
from fairtune.io import atomic_open, prepare_out_dir, write_json, write_jsonl
from fairtune.markdown import disagreements_markdown
from fairtune.models import LoadedModel, load_model

RECORDS_FILE = "records.jsonl"
SUMMARY_FILE = "summary.json"
BUNDLE_FILE = "bundle.json"
DISAGREEMENTS_FILE = "disagreements.md"  # for a human to read judge disagreements
MAX_SKIPPED_LISTED = 20


@dataclass
class AuditRun:
    """What one audit produced. ``out_dir`` is ``None`` when nothing was written."""

    summary: dict[str, Any]
    records: list[dict[str, Any]]
    out_dir: Path | None


@dataclass
class BundleRun:
    """A bundle's runs by audit name, and the bundle index written beside them."""

    bundle: str
    runs: dict[str, AuditRun]
    index: dict[str, Any]
    out_dir: Path | None


def run_audit(suite: str = "stereotype-pairs", *, model: str | LoadedModel | None = "embedded",
              data: str | Path | None = None, out: str | Path | None = None, force: bool = False,
              seed: int = 0, dtype: str = "float32", trust_remote_code: bool = False,
              max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, progress: bool = False,
              max_new_tokens: int = 48, reference: str | LoadedModel | None = None,
              responses: str | Path | None = None, judges: tuple[str, ...] = (),
              toxicity_scorer: str | None = None, samples: int = 1,
              system_prompt: str | None = None, bundle: str | None = None) -> AuditRun:
    """Audit ``model`` on ``suite`` (its built-in items, or ``data``).

    ``model`` is a spec string (``embedded``, a directory, a ``.gguf`` file, a hub id) or an
    already loaded :class:`LoadedModel`, so a notebook can audit one model many times.
    ``reference`` is the model that drift is measured against (capability); ``responses`` is
    a file of outputs to score instead of generating (counterfactual); ``system_prompt`` goes to
    audits that accept one (the extrapolation prompt baseline); ``bundle`` keeps the items of a
    bundle the audit joins (``gender``: its gender items). With ``out``, the
    artefacts are written there atomically; a non-empty ``out`` is refused unless ``force``.
    """
    started = time.perf_counter()
    audit = get_audit(suite)
    if system_prompt is not None and not audit.accepts_system_prompt:
        accepting = sorted(name for name, cls in AUDITS.items() if cls.accepts_system_prompt)
        raise FairtuneError(f"suite '{suite}': --system-prompt is not supported (audits that take one: "
                            f"{', '.join(accepting)})")
    out_dir = prepare_out_dir(out, force=force) if out is not None else None
    options = _options(seed, progress, max_batch_tokens, max_new_tokens, responses, judges, toxicity_scorer,
                       samples)
    options.system_prompt = system_prompt
    dataset = audit.load(Path(data) if data is not None else None, options)
    if bundle is not None:
        dataset = audit.subset(dataset, bundle)
    loaded = _load(model, dtype, trust_remote_code) if audit.needs_model(dataset, options) else None
    options.reference = _reference(reference, model, loaded, dtype, trust_remote_code)
    return _execute(audit, dataset, loaded, options, out_dir, started)


def run_bundle(bundle: str, *, model: str | LoadedModel = "embedded", out: str | Path | None = None,
               force: bool = False, seed: int = 0, dtype: str = "float32", trust_remote_code: bool = False,
               max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, progress: bool = False,
               max_new_tokens: int = 48, reference: str | LoadedModel | None = None,
               judges: tuple[str, ...] = (), toxicity_scorer: str | None = None, samples: int = 1) -> BundleRun:
    """Run every audit of a bundle (``gender``, ``all``, ...) on its built-in suite, the model
    loaded once. Each audit gets its own run directory ``out/<audit>/``; ``out/bundle.json``
    indexes their headline metrics."""
    started = time.perf_counter()
    if bundle not in bundle_names():
        raise unknown_suite(bundle)
    out_dir = prepare_out_dir(out, force=force) if out is not None else None
    options = _options(seed, progress, max_batch_tokens, max_new_tokens, None, judges, toxicity_scorer, samples)
    planned: list[tuple[Audit, Dataset]] = []
    for name in bundle_members(bundle):
        audit = AUDITS[name]()
        dataset = audit.subset(audit.load(None, options), bundle)
        if dataset.items:
            planned.append((audit, dataset))
    loaded = _load(model, dtype, trust_remote_code)
    options.reference = _reference(reference, model, loaded, dtype, trust_remote_code)
    runs = {}
    for audit, dataset in planned:
        sub_dir = out_dir / audit.name if out_dir is not None else None
        runs[audit.name] = _execute(audit, dataset, loaded, options, sub_dir, time.perf_counter(), bundle)
    index = {
        "bundle": bundle,
        "audits": {name: {"n_items": run.summary["n_items"],
                          "headline": {m: run.summary["metrics"]["overall"].get(m)
                                       for m in run.summary["headline_metrics"]}}
                   for name, run in runs.items()},
        "model": loaded.describe(),
        "seed": seed,
        "fairtune_version": _version(),
        "created_at": _now(),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    if out_dir is not None:
        write_json(out_dir / BUNDLE_FILE, index)
    return BundleRun(bundle, runs, index, out_dir)


def _options(seed, progress, max_batch_tokens, max_new_tokens, responses, judges, toxicity_scorer,
             samples) -> AuditOptions:
    return AuditOptions(seed=seed, progress=progress, max_batch_tokens=max_batch_tokens,
                        max_new_tokens=max_new_tokens, responses=Path(responses) if responses else None,
                        judges=tuple(judges), toxicity_scorer=toxicity_scorer, samples=samples)


def _reference(reference, model, loaded, dtype: str, trust_remote_code: bool) -> LoadedModel | None:
    """The reference model; the audited model itself when both name the same spec (not loaded twice)."""
    if reference is None:
        return None
    same_spec = isinstance(reference, str) and isinstance(model, str) and reference == model
    if loaded is not None and (same_spec or reference is loaded):
        return loaded
    return _load(reference, dtype, trust_remote_code)


def _load(model: str | LoadedModel, dtype: str, trust_remote_code: bool) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    return load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)


def _execute(audit: Audit, dataset: Dataset, loaded: LoadedModel | None, options: AuditOptions,
             out_dir: Path | None, started: float, bundle: str | None = None) -> AuditRun:
    result = audit.run(loaded, dataset, options)
    summary = {
        "suite": audit.name,
        "bundle": bundle,
        "metrics": result.metrics.as_dict(),
        "headline_metrics": list(audit.headline_metrics),
        "n_items": len(result.records),
        "n_skipped": len(dataset.skipped),
        "skipped": dataset.skipped[:MAX_SKIPPED_LISTED],
        "model": (loaded.describe() | {"load_seconds": loaded.load_seconds}) if loaded else None,
        "reference_model": options.reference.describe() if options.reference is not None else None,
        "data": {"source": dataset.source, "sha256": dataset.sha256, "format": dataset.format},
        "details": result.details,
        "seed": options.seed,
        "fairtune_version": _version(),
        "environment": _environment(),
        "created_at": _now(),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    if out_dir is not None:
        write_jsonl(out_dir / RECORDS_FILE, result.records)
        write_json(out_dir / SUMMARY_FILE, summary)
        if result.details.get("disagreements"):
            with atomic_open(out_dir / DISAGREEMENTS_FILE) as handle:
                handle.write(disagreements_markdown(summary))
    return AuditRun(summary, result.records, out_dir)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from fairtune import __version__

    return __version__


def _environment() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}
