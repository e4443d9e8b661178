"""The last step every curation command shares: hygiene, contamination guard, split, data card.

``finalize`` takes the records a builder produced (CDA, templates, self-generated text, safety
anchors) and writes ``train.jsonl``, ``validation.jsonl``, ``data_card.json`` and
``data_card.md``, each atomically, only after every check has passed. When the contamination
guard finds overlap and it is not allowed, nothing but ``contamination.json`` (the full overlap
report, for the user to read) is written and :class:`ContaminationError` is raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fairtune.curation.card import TermCounter, describe, render_markdown
from fairtune.curation.hygiene import DedupReport, deduplicate, split
from fairtune.errors import FairtuneError
from fairtune.io import atomic_open, prepare_out_dir, sha256_file, write_json, write_jsonl

TRAIN_FILE, VALIDATION_FILE = "train.jsonl", "validation.jsonl"
CARD_JSON, CARD_MARKDOWN, CONTAMINATION_FILE = "data_card.json", "data_card.md", "contamination.json"


class ContaminationError(FairtuneError):
    """The data overlaps an audit suite or a named benchmark, and overlap was not allowed."""

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


@dataclass
class Source:
    """An input of a build: a file (hashed) or a built-in/generated origin."""

    source: str
    records: int
    sha256: str | None = None

    @classmethod
    def from_file(cls, path: str | Path, records: int) -> Source:
        return cls(str(path), records, sha256_file(path))


@dataclass
class GuardSettings:
    """What the contamination guard checks against (see :mod:`fairtune.curation.contamination`)."""

    audits: tuple[str, ...] | None = None          # None: every registered audit's built-in suite
    benchmark_files: tuple[Path, ...] = ()
    embedding_model: str | None = None             # e.g. "minilm" or a sentence-transformers dir
    embedding_threshold: float = 0.92
    ngram: int = 8
    allow_overlap: bool = False
    enabled: bool = True


@dataclass
class CurationResult:
    train: list[dict]
    validation: list[dict]
    card: dict[str, Any]
    out_dir: Path | None
    dedup: DedupReport = field(default_factory=DedupReport)
    contamination: Any = None


def finalize(records: list[dict], *, name: str, builder: str, sources: list[Source],
             settings: dict[str, Any], out: str | Path | None = None, force: bool = False,
             before: list[dict] | None = None, term_counter: TermCounter | None = None,
             validation_fraction: float = 0.1, seed: int = 0, near_threshold: float | None = 0.85,
             guard: GuardSettings | None = None, near_exempt_kinds: tuple[str, ...] = (),
             split_by: str = "group", extra: dict[str, Any] | None = None) -> CurationResult:
    """Deduplicate, check for contamination, split, describe and (with ``out``) write.

    ``near_exempt_kinds``: kinds of record whose groups skip the near-duplicate check (fillings of
    one template share it by design); ``split_by``: ``group`` or ``family`` (see
    :func:`fairtune.curation.hygiene.split`); ``extra``: more top-level sections of the card
    (e.g. ``corpus``, what happened to every window of a streamed corpus)."""
    out_dir = prepare_out_dir(out, force=force) if out is not None else None
    guard = guard or GuardSettings()
    steps = {"input": len(before) if before is not None else len(records), "built": len(records)}
    if not records:
        raise FairtuneError(f"{name}: no records to write (every input was dropped; see the counts above)")
    kept, dedup = deduplicate(records, near_threshold=near_threshold, seed=seed, near_exempt_kinds=near_exempt_kinds)
    steps["after dedup"] = len(kept)

    report = None
    if guard.enabled:
        from fairtune.curation.contamination import check_contamination

        report = check_contamination(kept, audits=guard.audits, benchmark_files=guard.benchmark_files,
                                     ngram=guard.ngram, embedding_model=guard.embedding_model,
                                     embedding_threshold=guard.embedding_threshold)
        if report.overlaps and not guard.allow_overlap:
            if out_dir is not None:
                write_json(out_dir / CONTAMINATION_FILE, report.as_dict())
            first = report.overlaps[0]
            raise ContaminationError(
                f"{report.overlapping_records} training records overlap the evaluation data, e.g. record "
                f"'{first.record_id}' ~ {first.reference} ({first.kind}); "
                + (f"see {out_dir / CONTAMINATION_FILE}; " if out_dir is not None else "")
                + "remove them or pass --allow-overlap", report)

    train, validation = split(kept, validation_fraction=validation_fraction, seed=seed, by=split_by)
    card: dict[str, Any] = {
        "name": name, "builder": builder, "fairtune_version": _version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": [vars(s) for s in sources],
        "settings": {**settings, "seed": seed, "validation_fraction": validation_fraction,
                     "near_threshold": near_threshold, "split_by": split_by,
                     "guard": {k: [str(p) for p in v] if k == "benchmark_files" else v
                               for k, v in vars(guard).items()}},
        "steps": {**steps, "train": len(train), "validation": len(validation)},
        "counts": {"before": describe(before if before is not None else records, term_counter),
                   "after": describe(kept, term_counter),
                   "train": describe(train, term_counter), "validation": describe(validation, term_counter)},
        "deduplication": {"near_threshold": near_threshold, "exact": dedup.exact, "near": dedup.near,
                          **({"near_exempt_kinds": list(near_exempt_kinds)} if near_exempt_kinds else {})},
        "contamination": ({**report.as_dict(), "allowed": bool(report.overlaps) and guard.allow_overlap}
                          if report is not None else None),
        "splits": {},
        **(extra or {}),
    }
    if out_dir is not None:
        for split_name, file_name, rows in (("train", TRAIN_FILE, train), ("validation", VALIDATION_FILE, validation)):
            write_jsonl(out_dir / file_name, rows)
            card["splits"][split_name] = {"file": file_name, "records": len(rows),
                                          "sha256": sha256_file(out_dir / file_name)}
        write_json(out_dir / CARD_JSON, card)
        with atomic_open(out_dir / CARD_MARKDOWN) as handle:
            handle.write(render_markdown(card))
    else:
        card["splits"] = {"train": {"file": None, "records": len(train), "sha256": None},
                          "validation": {"file": None, "records": len(validation), "sha256": None}}
    return CurationResult(train, validation, card, out_dir, dedup, report)


def _version() -> str:
    from fairtune import __version__

    return __version__
