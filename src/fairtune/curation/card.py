"""The data card: what went into a training set and what came out, as JSON and Markdown.

The JSON is the source of truth; the Markdown is rendered from it. Every count in the card is
recomputed from the records it describes, so a test can check the card against the files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from fairtune.curation.records import Record, meta, record_format, record_texts
from fairtune.markdown import escape_markdown

TermCounter = Callable[[Iterable[str]], dict[str, dict[str, int]]]


def attribute_counts(records: Iterable[Record]) -> dict[str, dict[str, int]]:
    """Records per attribute value, from ``meta.attributes``: ``{"gender": {"female": 12, ...}}``."""
    counts: dict[str, Counter] = {}
    for record in records:
        for axis, value in (meta(record).get("attributes") or {}).items():
            counts.setdefault(axis, Counter())[str(value)] += 1
    return {axis: dict(sorted(c.items())) for axis, c in sorted(counts.items())}


def kind_counts(records: Iterable[Record]) -> dict[str, int]:
    return dict(sorted(Counter(str(meta(r).get("kind", "unlabelled")) for r in records).items()))


def format_counts(records: Iterable[Record]) -> dict[str, int]:
    return dict(sorted(Counter(record_format(r) for r in records).items()))


def describe(records: list[Record], term_counter: TermCounter | None = None) -> dict[str, Any]:
    """Counts of one set of records: total, by format, by kind, by attribute, and (with a
    ``term_counter``) demographic terms in the text by axis and value."""
    out: dict[str, Any] = {"records": len(records), "formats": format_counts(records),
                           "kinds": kind_counts(records), "attributes": attribute_counts(records)}
    if term_counter is not None:
        out["terms"] = term_counter(t for r in records for t in record_texts(r))
    return out


def render_steps(card: dict[str, Any]) -> str:
    """A few lines for the console: records through each step, the splits, attribute balance."""
    lines = [" -> ".join(f"{step} {count}" for step, count in card["steps"].items())]
    for stage in ("before", "after"):
        stats = card["counts"][stage]
        for title, table in (("records", stats["attributes"]), ("terms", stats.get("terms", {}))):
            for axis, values in table.items():
                if values:
                    lines.append(f"{stage:>6} {axis} {title}: " + ", ".join(f"{v} {n}" for v, n in values.items()))
    contamination = card.get("contamination")
    if contamination is not None:
        lines.append(f"contamination: {len(contamination['overlaps'])} overlaps with "
                     f"{len(contamination['references'])} evaluation sets"
                     + (" (allowed)" if contamination.get("allowed") else ""))
    files = [split["file"] for split in card["splits"].values() if split.get("file")]
    if files:
        lines.append("wrote " + ", ".join(files) + ", data_card.json, data_card.md")
    return "\n".join(lines)


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown for people (the JSON beside it is for programs)."""
    lines = [f"# Data card: {escape_markdown(card['name'])}", "",
             f"Built by {escape_markdown(card['builder'])} with fairtune {card['fairtune_version']} "
             f"on {card['created']}.", ""]
    lines += ["## Sources", "", "| source | records | sha256 |", "|---|---:|---|"]
    for source in card["sources"]:
        lines.append(f"| {escape_markdown(source['source'])} | {source.get('records', '')} | "
                     f"`{source.get('sha256') or '-'}` |")
    steps = card["steps"]
    lines += ["", "## Records through the steps", "", "| step | records |", "|---|---:|"]
    lines += [f"| {escape_markdown(step)} | {count} |" for step, count in steps.items()]
    lines += ["", "## Splits", "", "| split | records | file | sha256 |", "|---|---:|---|---|"]
    for name, split in card["splits"].items():
        lines.append(f"| {name} | {split['records']} | {split['file']} | `{split['sha256']}` |")
    for stage in ("before", "after"):
        stats = card["counts"][stage]
        lines += ["", f"## Counts {stage} curation", "", f"Records: {stats['records']}; kinds: "
                  + ", ".join(f"{escape_markdown(k)} {v}" for k, v in stats["kinds"].items())]
        for title, table in (("attribute (records)", stats["attributes"]), ("terms in text", stats.get("terms", {}))):
            for axis, values in table.items():
                total = sum(values.values()) or 1
                lines += ["", f"| {escape_markdown(axis)}: {title} | count | share |", "|---|---:|---:|"]
                lines += [f"| {escape_markdown(v)} | {n} | {n / total:.1%} |" for v, n in values.items()]
    dedup = card["deduplication"]
    lines += ["", "## Hygiene", "", f"- exact duplicates removed: {len(dedup['exact'])}",
              f"- near duplicates removed (Jaccard >= {dedup['near_threshold']}): {len(dedup['near'])}"]
    contamination = card.get("contamination")
    if contamination:
        lines += ["", "## Contamination check", "",
                  f"Checked against: {escape_markdown(', '.join(r['name'] for r in contamination['references']))}.",
                  f"Overlaps found: {len(contamination['overlaps'])}"
                  + (" (allowed by --allow-overlap)" if contamination.get("allowed") else "") + "."]
        for overlap in contamination["overlaps"][:10]:
            lines.append(f"- {escape_markdown(overlap['record_id'])} ~ {escape_markdown(overlap['reference'])} "
                         f"({overlap['kind']}): {escape_markdown(overlap['excerpt'])}")
    lines += ["", "## Settings", "", "```json", _json(card["settings"]), "```", ""]
    return "\n".join(lines)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)
