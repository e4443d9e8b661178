"""Errors that reach the user as one line and exit code 2, never as a traceback."""

from __future__ import annotations

from pathlib import Path


class FairtuneError(Exception):
    """A problem the user can fix (bad input, unknown name, missing model).

    The CLI prints ``str(error)`` on one line and exits with :attr:`exit_code`.
    """

    exit_code = 2


class InputError(FairtuneError):
    """Bad input data, located by file, row and field where they are known."""

    def __init__(self, message: str, *, file: str | Path | None = None,
                 row: int | str | None = None, field: str | None = None):
        self.file, self.row, self.field, self.reason = file, row, field, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ModelError(FairtuneError):
    """A model spec that cannot be resolved or loaded."""


class OutputError(FairtuneError):
    """An output location that cannot be written as asked."""


def from_validation(exc: Exception, *, file: str | Path | None) -> InputError:
    """A pydantic ``ValidationError`` as one line naming the first bad key."""
    error = exc.errors()[0]   # type: ignore[attr-defined]
    # Validator steps and tagged-union tags appear in loc; keep the user's path only.
    key = ".".join(str(p) for p in error["loc"] if not str(p).startswith(("function-after", "tagged-union")))
    message = error["msg"].removeprefix("Value error, ")
    return InputError(message, file=file, field=key or None)
