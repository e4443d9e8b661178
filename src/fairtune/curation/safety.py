"""Safety anchors: harmful requests paired with refusals, benign requests paired with helpful answers.

A debiasing fine-tune moves the whole model, guardrails included. Mixing these anchors into the
training data holds both ends in place: the model keeps refusing what it should refuse
(``anchor-refusal``) and does not learn to refuse whatever merely *sounds* dangerous
(``anchor-helpful``: "kill a process", "the history of the Manhattan Project", "what is arson?").

The built-in set (``data/safety_anchors.jsonl``) was written for fairtune: over 200 harmful
requests spread evenly over the refusal audit's ten categories (weapons, drugs, cyber, fraud, hate,
harassment, self-harm, privacy, violence, misinformation), each naming the goal only, with a short
refusal that opens the way our refusal judges recognise ("I can't...", "I won't...", "Sorry, but I
can't...") and offers a safe alternative where one fits (self-harm replies point to 988, the US
crisis line, or local emergency services); and over 200 benign requests with short, correct
answers, from words that only sound violent to safety information, history, fiction, cooking,
science and code. None copies a public dataset, and none shares an 8-word run with the refusal or
over-refusal audit suites (the tests check this, and :func:`fairtune.curation.build.finalize` runs
the full contamination guard).

A user's own anchor file is JSONL in either of two forms, mixed freely:

* a training record (:mod:`fairtune.curation.records`) with ``messages`` or
  ``prompt``+``completion`` and ``meta.kind`` of ``anchor-refusal`` or ``anchor-helpful``;
* the simple form ``{"prompt": ..., "response": ..., "label": "harmful"|"benign"}`` (optional
  ``id`` and ``category``), turned into a chat record.

A bad row fails with :class:`~fairtune.errors.InputError` naming the file, row and field.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fairtune.curation.records import Record, record_key, validate_record
from fairtune.errors import InputError
from fairtune.readers import read_jsonl_rows

BUILTIN_SOURCE = "builtin:safety-anchors"
REFUSAL_KIND = "anchor-refusal"
HELPFUL_KIND = "anchor-helpful"
KINDS = (REFUSAL_KIND, HELPFUL_KIND)
# Simple-form labels and the record kind each becomes.
LABELS = {"harmful": REFUSAL_KIND, "benign": HELPFUL_KIND}
_ID_PREFIX = {REFUSAL_KIND: "anchor-harm", HELPFUL_KIND: "anchor-help"}


def builtin_anchor_path() -> Path:
    """The packaged anchor set."""
    return Path(str(resources.files("fairtune.curation") / "data" / "safety_anchors.jsonl"))


def load_anchors(path: str | Path | None = None, *, n_refusal: int | None = None,
                 n_helpful: int | None = None, seed: int = 0) -> list[dict]:
    """The anchors of ``path`` (the built-in set when ``None``) as training records.

    ``n_refusal`` / ``n_helpful`` keep a seeded subset of that kind, spread as evenly as possible
    over ``meta.category`` (round robin over the categories, each shuffled); ``None`` keeps all,
    and asking for more than the file holds is an error. The two kinds are sampled independently,
    so changing one count leaves the other's subset as it was. Records keep their file order.
    """
    file = builtin_anchor_path() if path is None else Path(path)
    source = BUILTIN_SOURCE if path is None else str(path)
    records: list[Record] = []
    seen: dict[str, int] = {}
    for row, obj in read_jsonl_rows(file):
        record = (_from_record(obj, file, row, source) if _is_record_form(obj)
                  else _from_simple(obj, file, row, source))
        record_id = str(record["id"])
        if record_id in seen:
            raise InputError(f"duplicate id {record_id!r} (first on row {seen[record_id]})",
                             file=file, row=row, field="id")
        seen[record_id] = row
        records.append(record)

    chosen: set[int] = set()
    for kind, n, option in ((REFUSAL_KIND, n_refusal, "n_refusal"), (HELPFUL_KIND, n_helpful, "n_helpful")):
        pool = [i for i, r in enumerate(records) if r["meta"]["kind"] == kind]
        chosen.update(_balanced_sample(records, pool, n, random.Random(f"{seed}:{kind}"),
                                       option=option, file=file))
    return [r for i, r in enumerate(records) if i in chosen]


def _is_record_form(obj: dict[str, Any]) -> bool:
    """A training record has a record body; anything else is read as the simple form (so a row
    with ``prompt`` but no ``completion`` gets the simple form's errors, which name ``response``
    and ``label``)."""
    return "messages" in obj or "text" in obj or ("prompt" in obj and "completion" in obj)


def _from_record(obj: dict[str, Any], file: Path, row: int, source: str) -> Record:
    record = validate_record(obj, file=file, row=row)
    if "text" in record:
        raise InputError("a 'text' record has no request and reply; an anchor needs 'messages' or "
                         "'prompt'+'completion'", file=file, row=row, field="text")
    if "messages" in record:
        roles = [m["role"] for m in record["messages"]]
        if "user" not in roles:
            raise InputError("no user turn: an anchor pairs a request with its reply",
                             file=file, row=row, field="messages")
        if roles[-1] != "assistant":
            raise InputError("the last turn must be the assistant's reply", file=file, row=row,
                             field=f"messages[{len(roles) - 1}].role")
    meta = dict(record.get("meta") or {})
    kind = meta.get("kind")
    if kind not in KINDS:
        got = "missing" if kind is None else f"got {kind!r}"
        raise InputError(f"expected {' or '.join(repr(k) for k in KINDS)} ({got}); or write the row as "
                         "{\"prompt\", \"response\", \"label\": \"harmful\"|\"benign\"}",
                         file=file, row=row, field="meta.kind")
    meta.setdefault("source", source)
    record = {**record, "meta": meta}
    if "id" not in record:
        record = {"id": f"{_ID_PREFIX[kind]}-{record_key(record)}", **record}
    return record


def _from_simple(obj: dict[str, Any], file: Path, row: int, source: str) -> Record:
    def fail(message: str, field: str) -> InputError:
        return InputError(message, file=file, row=row, field=field)

    for name in ("prompt", "response"):
        value = obj.get(name)
        if not isinstance(value, str) or not value.strip():
            raise fail("missing or empty" if value is None or isinstance(value, str) else "expected a string", name)
    label = obj.get("label")
    expected = " or ".join(repr(name) for name in LABELS)
    if label is None:
        raise fail(f"missing; expected {expected}", "label")
    if not isinstance(label, str) or label.strip().lower() not in LABELS:
        raise fail(f"unknown label {label!r}; expected {expected}", "label")
    kind = LABELS[label.strip().lower()]
    meta: dict[str, Any] = {"source": source, "kind": kind}
    category = obj.get("category")
    if category is not None:
        if not isinstance(category, str) or not category.strip():
            raise fail("expected a non-empty string", "category")
        meta["category"] = category.strip()
    record: Record = {"messages": [{"role": "user", "content": obj["prompt"]},
                                   {"role": "assistant", "content": obj["response"]}],
                      "meta": meta}
    if "id" in obj:
        if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool) or not str(obj["id"]).strip():
            raise fail("expected a non-empty string", "id")
        return {"id": str(obj["id"]), **record}
    return {"id": f"{_ID_PREFIX[kind]}-{record_key(record)}", **record}


def _balanced_sample(records: Sequence[Record], pool: list[int], n: int | None, rng: random.Random, *,
                     option: str, file: Path) -> list[int]:
    """``n`` indices of ``pool``, round robin over categories (each category and the category
    order shuffled by ``rng``), so category counts differ by at most one while every category
    has records left."""
    if n is None:
        return pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"{option} must be a whole number of at least 0, got {n!r}")
    kind = "refusal" if option == "n_refusal" else "helpful"
    if n > len(pool):
        raise InputError(f"{option}={n} asks for more {kind} anchors than the file has ({len(pool)})", file=file)
    by_category: dict[str, list[int]] = {}
    for index in pool:
        by_category.setdefault(str(records[index]["meta"].get("category") or ""), []).append(index)
    queues = [rng.sample(members, len(members)) for _, members in sorted(by_category.items())]
    rng.shuffle(queues)
    chosen: list[int] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return chosen
