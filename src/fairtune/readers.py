"""Read input files (CSV/TSV, JSON, JSONL) with errors that name the file, row and field.

CSV rows are numbered as a spreadsheet shows them: the header is row 1, the first data row is 2.
JSON and JSONL errors give the line number as the row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fairtune.errors import InputError


def read_text(path: str | Path) -> str:
    """The file's text as UTF-8 (a BOM is dropped); a decoding error names row and field."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", file=path)
    if path.is_dir():
        raise InputError("is a directory, expected a file", file=path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row, field = _locate_byte(raw, exc.start)
        if path.suffix.lower() not in (".csv", ".tsv"):
            field = None  # column names only mean something in a table
        raise InputError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                         "save the file as UTF-8", file=path, row=row, field=field) from None


def _locate_byte(raw: bytes, offset: int) -> tuple[int, str | None]:
    """Row number and CSV column name of a byte offset, for pointing at bad bytes."""
    row = raw.count(b"\n", 0, offset) + 1
    line_start = raw.rfind(b"\n", 0, offset) + 1
    header = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    delimiter = "\t" if "\t" in header and "," not in header else ","
    names = next(csv.reader([header], delimiter=delimiter), [])
    before = raw[line_start:offset].decode("utf-8", errors="replace")
    column = len(next(csv.reader([before + "x"], delimiter=delimiter), [""])) - 1
    return row, (names[column] if 0 <= column < len(names) else None)


def read_csv_rows(path: str | Path, required: Sequence[str], *,
                  delimiter: str = ",") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row_number, row)`` for every data row; all ``required`` columns must exist and be
    non-empty. ``delimiter="\t"`` reads TSV."""
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise InputError("empty file, expected a header and rows", file=path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip() for name in (reader.fieldnames or [])]
    reader.fieldnames = header
    for name in required:
        if name not in header:
            raise InputError(f"column missing from the header (found: {', '.join(h for h in header if h)})",
                             file=path, row=1, field=name)
    row_number, count = 1, 0
    for row in reader:
        row_number += 1
        count += 1
        if None in row:
            raise InputError(f"{len(header) + len(row[None])} fields, header has {len(header)}",
                             file=path, row=row_number)
        for name in required:
            value = row.get(name)
            if value is None or not value.strip():
                raise InputError("empty value", file=path, row=row_number, field=name)
        yield row_number, row
    if count == 0:
        raise InputError("no data rows after the header", file=path)


def read_json(path: str | Path) -> Any:
    """A whole JSON document; a syntax error names its line (as the row) and column."""
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise InputError("empty file, expected JSON", file=path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON at column {exc.colno}: {exc.msg}", file=path, row=exc.lineno) from None


def read_jsonl_rows(path: str | Path, required: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSONL file; each line must be a
    JSON object with the ``required`` keys present and not empty."""
    path = Path(path)
    text = read_text(path)
    count = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON at column {exc.colno}: {exc.msg}", file=path, row=line_number) from None
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object on each line", file=path, row=line_number)
        for name in required:
            value = obj.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise InputError("missing or empty", file=path, row=line_number, field=name)
        count += 1
        yield line_number, obj
    if count == 0:
        raise InputError("empty file, expected JSON lines", file=path)


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) file whose top level is a mapping of settings."""
    import yaml

    path = Path(path)
    text = read_text(path)
    try:
        raw = yaml.safe_load(text)   # JSON is YAML too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=path,
                         row=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict):
        raise InputError("expected a mapping of settings at the top level", file=path)
    return raw
