import pytest

from fairtune.errors import InputError
from fairtune.readers import read_csv_rows, read_json, read_jsonl_rows


def test_tsv_rows(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("sentid\tsentence\nx.1\tHello, world\n", encoding="utf-8")
    assert list(read_csv_rows(path, ["sentid", "sentence"], delimiter="\t")) == [
        (2, {"sentid": "x.1", "sentence": "Hello, world"})]


def test_jsonl_rows_and_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"context": "c", "label": 0}\n\n{"context": ""}\n', encoding="utf-8")
    rows = read_jsonl_rows(path, ["context"])
    assert next(rows) == (1, {"context": "c", "label": 0})
    with pytest.raises(InputError) as info:
        next(rows)
    assert (info.value.row, info.value.field) == (3, "context")
    path.write_text('{"context": "c"}\n{"context": \n', encoding="utf-8")
    with pytest.raises(InputError, match="invalid JSON") as info:
        list(read_jsonl_rows(path))
    assert info.value.row == 2
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(InputError, match="JSON object"):
        list(read_jsonl_rows(path))
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty file"):
        list(read_jsonl_rows(path))


def test_json_errors_name_the_line(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text('{"version": "1.0",\n "data": [}\n', encoding="utf-8")
    with pytest.raises(InputError, match="invalid JSON") as info:
        read_json(path)
    assert info.value.row == 2
    path.write_text('{"data": {}}', encoding="utf-8")
    assert read_json(path) == {"data": {}}


def test_bad_utf8_names_column_only_in_tables(tmp_path):
    from fairtune.readers import read_text

    tsv = tmp_path / "a.tsv"
    tsv.write_bytes(b"sentid\tsentence\nx.1\tcaf\xe9\n")
    with pytest.raises(InputError) as info:
        read_text(tsv)
    assert (info.value.row, info.value.field) == (2, "sentence")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError) as info:
        read_text(jsonl)
    assert (info.value.row, info.value.field) == (2, None)
