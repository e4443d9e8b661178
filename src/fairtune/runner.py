"""Run one audit end to end: validate, load, score, write ``records.jsonl`` and ``summary.json``.

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

from fairtune.audits import get_audit
from fairtune.engine.scoring import DEFAULT_MAX_BATCH_TOKENS
from fairtune.io import prepare_out_dir, write_json, write_jsonl
from fairtune.models import LoadedModel, load_model

RECORDS_FILE = "records.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass
class AuditRun:
    """What a run produced. ``out_dir`` is ``None`` when nothing was written."""

    summary: dict[str, Any]
    records: list[dict[str, Any]]
    out_dir: Path | None


def run_audit(suite: str = "stereotype-pairs", *, model: str | LoadedModel = "embedded",
              data: str | Path | None = None, out: str | Path | None = None, force: bool = False,
              seed: int = 0, dtype: str = "float32", trust_remote_code: bool = False,
              max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, progress: bool = False) -> AuditRun:
    """Audit ``model`` on ``suite`` (its built-in items, or ``data``).

    ``model`` is a spec string (``embedded``, a directory, a ``.gguf`` file, a hub id) or an
    already loaded :class:`LoadedModel`, so a notebook can audit one model many times.
    With ``out``, the artefacts are written there atomically; a non-empty ``out`` is refused
    unless ``force``.
    """
    started = time.perf_counter()
    audit = get_audit(suite)
    out_dir = prepare_out_dir(out, force=force) if out is not None else None
    dataset = audit.load(Path(data) if data is not None else None)
    loaded = model if isinstance(model, LoadedModel) else load_model(
        model, dtype=dtype, trust_remote_code=trust_remote_code)
    result = audit.run(loaded, dataset, seed=seed, progress=progress, max_batch_tokens=max_batch_tokens)
    summary = {
        "suite": audit.name,
        "metrics": result.metrics.as_dict(),
        "headline_metrics": list(audit.headline_metrics),
        "n_items": len(result.records),
        "model": loaded.describe() | {"load_seconds": loaded.load_seconds},
        "data": {"source": dataset.source, "sha256": dataset.sha256, "format": dataset.format},
        "details": result.details,
        "seed": seed,
        "fairtune_version": _version(),
        "environment": _environment(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    if out_dir is not None:
        write_jsonl(out_dir / RECORDS_FILE, result.records)
        write_json(out_dir / SUMMARY_FILE, summary)
    return AuditRun(summary, result.records, out_dir)


def _version() -> str:
    from fairtune import __version__

    return __version__


def _environment() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}
