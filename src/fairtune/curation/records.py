"""The training-data record: the one JSONL format every curation step writes and the trainer reads.

A record is a JSON object with exactly one of three bodies:

* ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` (chat; the
  trainer puts loss on assistant turns only),
* ``{"prompt": str, "completion": str}`` (loss on the completion),
* ``{"text": str}`` (plain language-model data; loss everywhere),

plus an optional ``id`` (stable string), an optional ``loss`` (``"likelihood"``, the default;
``"unlikelihood"``: the labelled text is what the model should *not* say, trained with the
token-level unlikelihood loss of Welleck et al. 2019; or ``"none"``: the record trains no token
by the language-model loss, and fairness objectives read it, e.g. a neutral context whose next
word should not depend on gender) and an optional ``meta`` object that curation uses for
provenance and counts: ``source`` (where it came from), ``kind`` (``original``,
``counterfactual``, ``template``, ``context``, ``generated``, ``anchor-refusal``,
``anchor-helpful``...) and ``attributes`` (e.g. ``{"gender": "female"}``), which the data card
counts. Paired data (``fairtune data pairs``) adds ``group`` (the members of one counterfactual
group), ``axis``, ``domain``, ``family`` (template frame or source document) and, on contexts,
``association`` (the stereotyped lean of the context's content, e.g. ``{"gender": "female"}``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fairtune.errors import InputError
from fairtune.readers import read_jsonl_rows

Record = dict[str, Any]
ROLES = ("system", "user", "assistant")
BODIES = ("messages", "prompt", "text")
LOSSES = ("likelihood", "unlikelihood", "none")


def record_format(record: Record) -> str:
    """``messages``, ``prompt`` (prompt/completion) or ``text``."""
    for body in BODIES:
        if body in record:
            return body
    raise ValueError("record has none of messages, prompt/completion, text")


def validate_record(record: Any, *, file: str | Path | None = None, row: int | None = None) -> Record:
    """Check one record's shape; errors name the file, row and field."""
    def fail(message: str, field: str | None = None) -> InputError:
        return InputError(message, file=file, row=row, field=field)

    if not isinstance(record, dict):
        raise fail("expected a JSON object")
    bodies = [b for b in BODIES if b in record]
    if len(bodies) != 1:
        raise fail("expected exactly one of 'messages', 'prompt'+'completion' or 'text'"
                    + (f" (found {', '.join(bodies)})" if bodies else ""))
    body = bodies[0]
    if body == "messages":
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise fail("expected a non-empty list of {role, content} objects", "messages")
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if not isinstance(message, dict):
                raise fail("expected an object with 'role' and 'content'", where)
            if message.get("role") not in ROLES:
                raise fail(f"role must be one of {', '.join(ROLES)}, got {message.get('role')!r}", f"{where}.role")
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                raise fail("missing or empty", f"{where}.content")
        if not any(m["role"] == "assistant" for m in messages):
            raise fail("no assistant turn to learn from", "messages")
    elif body == "prompt":
        for name in ("prompt", "completion"):
            if not isinstance(record.get(name), str) or not record[name].strip():
                raise fail("missing or empty", name)
    else:
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise fail("missing or empty", "text")
    if "meta" in record and not isinstance(record["meta"], dict):
        raise fail("expected an object", "meta")
    if "id" in record and not isinstance(record["id"], (str, int)):
        raise fail("expected a string", "id")
    if record.get("loss", "likelihood") not in LOSSES:
        raise fail(f"expected {' or '.join(repr(k) for k in LOSSES)}, got {record['loss']!r}", "loss")
    return record


def is_unlikely(record: Record) -> bool:
    """Whether the record's labelled text is to be made unlikely rather than learnt."""
    return record.get("loss") == "unlikelihood"


def is_context(record: Record) -> bool:
    """Whether the record is a context that no token is learnt from (``loss: none``): fairness
    objectives read it (a neutral context whose next word should not depend on gender)."""
    return record.get("loss") == "none"


def read_records(path: str | Path) -> list[Record]:
    """Read and validate a training JSONL file."""
    return [validate_record(obj, file=path, row=row) for row, obj in read_jsonl_rows(path)]


def record_texts(record: Record, roles: Iterable[str] = ROLES) -> list[str]:
    """The free-text fields of a record (message contents of the given roles, prompt, completion,
    text): what duplicate and contamination checks look at."""
    body = record_format(record)
    if body == "messages":
        wanted = set(roles)
        return [m["content"] for m in record["messages"] if m["role"] in wanted]
    if body == "prompt":
        return [record["prompt"], record["completion"]]
    return [record["text"]]


def record_key(record: Record) -> str:
    """A content hash of the record body (not its id or meta): equal bodies, equal keys."""
    body = record_format(record)
    if body == "messages":
        content: Any = [[m["role"], m["content"]] for m in record["messages"]]
    elif body == "prompt":
        content = [record["prompt"], record["completion"]]
    else:
        content = record["text"]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()[:16]


def with_ids(records: Iterable[Record], prefix: str) -> Iterator[Record]:
    """Give each record without an ``id`` a stable one derived from its content."""
    for record in records:
        if "id" not in record:
            record = {"id": f"{prefix}-{record_key(record)}", **record}
        yield record


def meta(record: Record) -> dict[str, Any]:
    return record.get("meta") or {}
