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


def association_counts(records: Iterable[Record]) -> dict[str, dict[str, int]]:
    """Contexts per stereotyped association, from ``meta.association``: ``{"gender": {"female": 7}}``."""
    counts: dict[str, Counter] = {}
    for record in records:
        association = meta(record).get("association")
        if isinstance(association, dict):
            for axis, value in association.items():
                counts.setdefault(axis, Counter())[str(value)] += 1
    return {axis: dict(sorted(c.items())) for axis, c in sorted(counts.items())}


FAMILY_NAMES_LIMIT = 200   # a domain with more families (corpus documents) lists only their number


def domain_counts(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """Per ``meta.domain``: pair groups, their records, contexts (``meta.kind == "context"``) and
    families (``meta.family``: template frame or source document), with the family names where
    there are at most :data:`FAMILY_NAMES_LIMIT`."""
    from fairtune.curation.hygiene import family_of, group_of

    found: dict[str, dict[str, Any]] = {}
    for record in records:
        info = meta(record)
        if info.get("domain") is None:
            continue
        entry = found.setdefault(str(info["domain"]), {"groups": set(), "pair_records": 0, "contexts": 0,
                                                       "families": set()})
        if info.get("kind") == "context":
            entry["contexts"] += 1
        else:
            entry["groups"].add(group_of(record))
            entry["pair_records"] += 1
        entry["families"].add(family_of(record))
    out = {}
    for domain, entry in sorted(found.items()):
        families = sorted(entry["families"])
        out[domain] = {"pairs": len(entry["groups"]), "pair_records": entry["pair_records"],
                       "contexts": entry["contexts"], "families": len(families)}
        if len(families) <= FAMILY_NAMES_LIMIT:
            out[domain]["family_names"] = families
    return out


def describe(records: list[Record], term_counter: TermCounter | None = None) -> dict[str, Any]:
    """Counts of one set of records: total, by format, by kind, by attribute, and (with a
    ``term_counter``) demographic terms in the text by axis and value. Records with a
    ``meta.domain`` add ``domains`` (:func:`domain_counts`), contexts with a ``meta.association``
    add ``associations``."""
    out: dict[str, Any] = {"records": len(records), "formats": format_counts(records),
                           "kinds": kind_counts(records), "attributes": attribute_counts(records)}
    if term_counter is not None:
        out["terms"] = term_counter(t for r in records for t in record_texts(r))
    domains = domain_counts(records)
    if domains:
        out["domains"] = domains
    associations = association_counts(records)
    if associations:
        out["associations"] = associations
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
    for domain, entry in (card["counts"]["after"].get("domains") or {}).items():
        lines.append(f"domain {domain}: {entry['pairs']} pairs, {entry['contexts']} contexts, "
                     f"{entry['families']} families")
    corpus = card.get("corpus")
    if corpus:
        dropped = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in corpus["dropped"].items() if n)
        lines.append(f"corpus: {corpus['pairs']} pairs from {corpus['windows']} windows"
                     + (f"; dropped: {dropped}" if dropped else "")
                     + (f" (stopped at --max-pairs {corpus['max_pairs']})" if corpus.get("stopped_early") else ""))
    contamination = card.get("contamination")
    if contamination is not None:
        lines.append(f"contamination: {contamination_sentence(contamination)}")
    files = [split["file"] for split in card["splits"].values() if split.get("file")]
    if files:
        lines.append("wrote " + ", ".join(files) + ", data_card.json, data_card.md")
    return "\n".join(lines)


def contamination_sentence(contamination: dict[str, Any]) -> str:
    """One sentence: how many records overlap how many reference texts of how many sets."""
    texts = sum(int(r.get("texts", 0)) for r in contamination["references"])
    checked = contamination.get("checked_records", 0)
    overlapping = contamination.get("overlapping_records", len({o["record_id"] for o in contamination["overlaps"]}))
    return (f"{overlapping} of {checked} records overlap {texts} reference texts of "
            f"{len(contamination['references'])} evaluation sets"
            + (" (allowed by --allow-overlap)" if contamination.get("allowed") else ""))


def _render_domains(card: dict[str, Any]) -> list[str]:
    train = card["counts"].get("train", {}).get("domains") or {}
    validation = card["counts"].get("validation", {}).get("domains") or {}
    domains = sorted(set(train) | set(validation))
    if not domains:
        return []
    empty = {"pairs": 0, "contexts": 0, "families": 0}
    lines = ["", "## Domains and families", "",
             "Validation holds whole families (template frames; for corpus text, documents), so it measures "
             "generalisation to frames never trained on.", "",
             "| domain | pairs train | pairs validation | contexts train | contexts validation | families train | "
             "families validation |", "|---|---:|---:|---:|---:|---:|---:|"]
    for domain in domains:
        a, b = train.get(domain, empty), validation.get(domain, empty)
        lines.append(f"| {escape_markdown(domain)} | {a['pairs']} | {b['pairs']} | {a['contexts']} | "
                     f"{b['contexts']} | {a['families']} | {b['families']} |")
    for title, table in (("Families in train", train), ("Families in validation", validation)):
        listed = [(d, table[d]) for d in domains if d in table]
        if not listed:
            continue
        lines += ["", f"{title}:", ""]
        for domain, entry in listed:
            names = entry.get("family_names")
            shown = (", ".join(escape_markdown(n.removeprefix(f"{domain}/")) for n in names) if names is not None
                     else f"{entry['families']} families (too many to list)")
            lines.append(f"- {escape_markdown(domain)} ({entry['families']}): {shown}")
    return lines


def _render_contamination(contamination: dict[str, Any]) -> list[str]:
    references = contamination["references"]
    audits = [r for r in references if str(r.get("source", "")).startswith("builtin:")]
    files = [r for r in references if not str(r.get("source", "")).startswith("builtin:")]
    settings = contamination.get("settings") or {}
    method = (f"exact containment of a reference text (of {settings.get('min_exact_words', 4)}+ words; template "
              f"frames with {settings.get('min_frame_words', 5)}+ literal words), and shared runs of "
              f"{settings.get('ngram', 8)}+ consecutive words, after folding case, accents and punctuation")
    if settings.get("embedding_model"):
        method += (f"; paraphrases by embedding cosine >= {settings.get('embedding_threshold')} "
                   f"({settings['embedding_model']})")
    lines = ["", "## Contamination check", "",
             f"Checked {contamination.get('checked_records', 0)} records against "
             f"{sum(int(r.get('texts', 0)) for r in references)} reference texts: the built-in suites of "
             f"{len(audits)} audits ({escape_markdown(', '.join(r['name'] for r in audits)) or 'none'})"
             + (f" and {len(files)} benchmark files ({escape_markdown(', '.join(r['name'] for r in files))})"
                if files else "") + f". Matching: {method}.", "",
             "| reference | kind | source | items | texts | overlapping records |", "|---|---|---|---:|---:|---:|"]
    for ref in references:
        kind = "audit" if ref in audits else "file"
        lines.append(f"| {escape_markdown(ref['name'])} | {kind} | {escape_markdown(str(ref.get('source', '')))} | "
                     f"{ref.get('items', '')} | {ref.get('texts', '')} | {ref.get('overlapping_records', 0)} |")
    lines += ["", f"**Result: {contamination_sentence(contamination)}.**"]
    for overlap in contamination["overlaps"][:10]:
        lines.append(f"- {escape_markdown(overlap['record_id'])} ~ {escape_markdown(overlap['reference'])} "
                     f"({overlap['kind']}): {escape_markdown(overlap['excerpt'])}")
    return lines


def _render_corpus(corpus: dict[str, Any]) -> list[str]:
    low, high = corpus.get("window_words", ["?", "?"])
    lines = ["", "## Corpus windows", "",
             f"Windows of one or two sentences of {low}-{high} words holding a word of the axis, swapped by CDA: "
             f"{corpus['pairs']} pairs kept of {corpus['windows']} windows"
             + (f"; reading stopped at --max-pairs {corpus['max_pairs']}" if corpus.get("stopped_early") else "")
             + ".", "", "| dropped because | windows |", "|---|---:|"]
    lines += [f"| {reason.replace('_', ' ')} | {n} |" for reason, n in corpus["dropped"].items()]
    lines += ["", "| file | format | lines read | documents | windows | pairs |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {escape_markdown(f['file'])} | {f['format']} | {f['lines']} | {f['documents']} | {f['windows']} | "
              f"{f['pairs']} |" for f in corpus["files"]]
    return lines


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
        for axis, values in (stats.get("associations") or {}).items():
            total = sum(values.values()) or 1
            lines += ["", f"| {escape_markdown(axis)}: association (contexts) | count | share |", "|---|---:|---:|"]
            lines += [f"| {escape_markdown(v)} | {n} | {n / total:.1%} |" for v, n in values.items()]
    lines += _render_domains(card)
    if card.get("corpus"):
        lines += _render_corpus(card["corpus"])
    dedup = card["deduplication"]
    lines += ["", "## Hygiene", "", f"- exact duplicates removed: {len(dedup['exact'])}",
              (f"- near duplicates removed (Jaccard >= {dedup['near_threshold']}"
               + (f"; groups of kind {', '.join(dedup['near_exempt_kinds'])} exempt"
                  if dedup.get("near_exempt_kinds") else "") + f"): {len(dedup['near'])}"
               if dedup["near_threshold"] is not None else "- near-duplicate check: off for this builder")]
    contamination = card.get("contamination")
    if contamination:
        lines += _render_contamination(contamination)
    elif contamination is None:
        lines += ["", "## Contamination check", "", "Not run (--no-guard)."]
    lines += ["", "## Settings", "", "```json", _json(card["settings"]), "```", ""]
    return "\n".join(lines)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)
