"""Cached stages: keys that change with the installed package, and one build under concurrency."""

import json
import multiprocessing
import shutil
import time
from pathlib import Path

from fairtune.pipeline import stages
from fairtune.pipeline.stages import STAGE_FILE, _package_key, run_stage, stage_key


def _package(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "module.py").write_text("X = 1\n")
    (root / "data" / "words.tsv").write_text("he\tshe\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "module.pyc").write_bytes(b"compiled")
    return root


def test_package_key_follows_data_code_and_version_but_not_bytecode(tmp_path):
    first = _package(tmp_path / "a")
    same = shutil.copytree(first, tmp_path / "b")
    (same / "__pycache__" / "module.pyc").write_bytes(b"recompiled")
    assert _package_key(first, "0.1.0") == _package_key(same, "0.1.0")
    assert _package_key(first, "0.1.0") != _package_key(first, "0.2.0")
    edited_data = shutil.copytree(first, tmp_path / "c")
    (edited_data / "data" / "words.tsv").write_text("he\tshe\nhis\ther\n")
    edited_code = shutil.copytree(first, tmp_path / "d")
    (edited_code / "module.py").write_text("X = 2\n")
    keys = {_package_key(p, "0.1.0") for p in (first, edited_data, edited_code)}
    assert len(keys) == 3


def test_a_stage_is_rebuilt_when_the_package_changes(tmp_path, monkeypatch):
    builds = []

    def build(directory: Path) -> None:
        builds.append(directory)
        directory.mkdir()
        (directory / "out.txt").write_text("done")

    target = tmp_path / "stage"
    run_stage(target, stage_key("audit", 1), build)
    run_stage(target, stage_key("audit", 1), build)
    assert len(builds) == 1
    monkeypatch.setattr(stages, "package_key", lambda root=None: "an-upgraded-fairtune")
    run_stage(target, stage_key("audit", 1), build)
    assert len(builds) == 2 and (target / "out.txt").read_text() == "done"


def _build_slowly(target: str, counter: str, started: str) -> None:
    def build(directory: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        Path(started).touch()
        time.sleep(1.5)
        directory.mkdir()

    run_stage(Path(target), "same-key", build)


def test_two_processes_sharing_a_stage_build_it_once(tmp_path):
    target, counter, started = tmp_path / "shared" / "audit", tmp_path / "builds.txt", tmp_path / "started"
    context = multiprocessing.get_context("fork")
    first = context.Process(target=_build_slowly, args=(str(target), str(counter), str(started)))
    first.start()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:   # the first holds the lock and builds
        time.sleep(0.05)
    second = context.Process(target=_build_slowly, args=(str(target), str(counter), str(started)))
    second.start()
    for process in (first, second):
        process.join(60)
        assert process.exitcode == 0
    assert counter.read_text().splitlines() == ["built"]
    assert json.loads((target / STAGE_FILE).read_text())["key"] == "same-key"


def _fingerprint(path: str) -> None:
    from fairtune.models.cache import file_fingerprint

    file_fingerprint(path)


def test_concurrent_fingerprints_all_reach_the_memo(tmp_path, monkeypatch):
    # Each process reads the memo, adds its file and writes it back, slowly: without a lock
    # they would overwrite each other's entries.
    from fairtune import io
    from fairtune.models import cache

    monkeypatch.setenv("FAIRTUNE_CACHE", str(tmp_path / "cache"))
    write = io.write_json

    def slow_write(path, obj):
        time.sleep(0.3)
        write(path, obj)

    monkeypatch.setattr(cache, "write_json", slow_write)
    files = []
    for i in range(4):
        files.append(tmp_path / f"weights-{i}.bin")
        files[-1].write_bytes(bytes([i]) * 1000)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_fingerprint, args=(str(f),)) for f in files]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    memo = json.loads((tmp_path / "cache" / "fingerprints.json").read_text())
    assert sorted(k.split("|")[0] for k in memo) == sorted(str(f.resolve()) for f in files)
