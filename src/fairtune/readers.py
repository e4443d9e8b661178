"""Read tabular input files with errors that name the file, row and field.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first data row is 2.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

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
        raise InputError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                         "save the file as UTF-8", file=path, row=row, field=field) from None


def _locate_byte(raw: bytes, offset: int) -> tuple[int, str | None]:
    """Row number and CSV column name of a byte offset, for pointing at bad bytes."""
    row = raw.count(b"\n", 0, offset) + 1
    line_start = raw.rfind(b"\n", 0, offset) + 1
    header = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    names = next(csv.reader([header]), [])
    before = raw[line_start:offset].decode("utf-8", errors="replace")
    column = len(next(csv.reader([before + "x"]), [""])) - 1
    return row, (names[column] if 0 <= column < len(names) else None)


def read_csv_rows(path: str | Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row_number, row)`` for every data row; all ``required`` columns must exist and be non-empty."""
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise InputError("empty file, expected a CSV header and rows", file=path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
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
