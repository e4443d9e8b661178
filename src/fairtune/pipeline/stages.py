"""Cached stages: a stage's directory is reused when it was built from the same inputs.

A stage is a function that fills a directory. It runs into ``.<name>.partial`` beside its target
and is renamed into place only when complete, with a ``stage.json`` holding the key it was built
from (a hash of everything it depends on, upstream keys included, and of the installed fairtune
itself: its version and the bytes of its code and built-in data). So an interrupted run resumes
from the last complete stage, a changed setting redoes exactly the stages whose key changed, and
an upgrade or an edited built-in suite redoes them all. A lock file beside the target makes two
runs that share a cache (the audits kept beside an aligned model) build each stage once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairtune.io import write_json

STAGE_FILE = "stage.json"


def package_key(root: Path | None = None) -> str:
    """A hash of fairtune's version and every file of the package under ``root`` (default: the
    installed package): code and built-in data alike, since either can change a stage's result
    while a development checkout keeps its version number."""
    import fairtune

    return _package_key(Path(root or Path(fairtune.__file__).parent).resolve(), fairtune.__version__)


@functools.cache
def _package_key(root: Path, version: str) -> str:
    digest = hashlib.sha256(version.encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def stage_key(*parts: Any) -> str:
    text = json.dumps([package_key(), parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_info(target: Path) -> dict[str, Any] | None:
    marker = target / STAGE_FILE
    return json.loads(marker.read_text()) if marker.exists() else None


def run_stage(target: Path, key: str, build: Callable[[Path], Any], log: Callable[[str], None] = lambda _: None,
              label: str | None = None) -> Path:
    """Run ``build(tmp_dir)`` unless ``target`` was already built from ``key``. Another process
    building the same target is waited for, and its result reused when its key matches."""
    from filelock import FileLock, Timeout

    label = label or target.name
    info = stage_info(target)
    if info is not None and info.get("key") == key:
        log(f"{label}: cached")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"{label}: waiting for another run that is building it")
        lock.acquire()
    try:
        return _build(target, key, build, log, label)
    finally:
        lock.release()


def _build(target: Path, key: str, build: Callable[[Path], Any], log: Callable[[str], None], label: str) -> Path:
    info = stage_info(target)                    # built meanwhile by the run we waited for?
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
