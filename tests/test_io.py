import json

import pytest

from fairtune.errors import OutputError
from fairtune.io import atomic_open, prepare_out_dir, write_json, write_jsonl, read_jsonl


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "summary.json"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("{half")
            raise RuntimeError("boom")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "records.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(ValueError):  # NaN is not JSON
        write_jsonl(target, [{"a": 2}, {"b": float("nan")}])
    assert read_jsonl(target) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]


def test_write_json_round_trip(tmp_path):
    write_json(tmp_path / "s.json", {"x": [1, 2], "é": "ü"})
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == {"x": [1, 2], "é": "ü"}


def test_out_dir_rules(tmp_path):
    assert prepare_out_dir(tmp_path / "new", force=False) == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # created only by the first write
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match="--force"):
        prepare_out_dir(tmp_path / "full", force=False)
    assert prepare_out_dir(tmp_path / "full", force=True)
    with pytest.raises(OutputError, match="not a directory"):
        prepare_out_dir(tmp_path / "full" / "x", force=True)
