"""Cached stages: a stage's directory is reused when it was built from the same inputs.

A stage is a function that fills a directory. It runs into ``.<name>.partial`` beside its target
and is renamed into place only when complete, with a ``stage.json`` holding the key it was built
from (a hash of everything it depends on, upstream keys included). So an interrupted run resumes
from the last complete stage, and a changed setting redoes exactly the stages whose key changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairtune.io import write_json

STAGE_FILE = "stage.json"


def stage_key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_info(target: Path) -> dict[str, Any] | None:
    marker = target / STAGE_FILE
    return json.loads(marker.read_text()) if marker.exists() else None


def run_stage(target: Path, key: str, build: Callable[[Path], Any], log: Callable[[str], None] = lambda _: None,
              label: str | None = None) -> Path:
    """Run ``build(tmp_dir)`` unless ``target`` was already built from ``key``."""
    label = label or target.name
    info = stage_info(target)
    if info is not None and info.get("key") == key:
        log(f"{label}: cached")
        return target
    started = time.perf_counter()
    log(f"{label}: running")
    work = target.parent / f".{target.name}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.parent.mkdir(parents=True, exist_ok=True)
    build(work)
    work.mkdir(parents=True, exist_ok=True)
    seconds = round(time.perf_counter() - started, 1)
    write_json(work / STAGE_FILE, {"key": key, "seconds": seconds})
    if target.exists():
        shutil.rmtree(target)
    work.rename(target)
    log(f"{label}: done in {seconds:.0f} s")
    return target
