"""Paired counterfactual data and neutral contexts for fairness objectives (``fairtune data pairs``).

Three training objectives read what this module builds:

* ``counterfactual_pairing`` reads **pairs**: ordinary ``text`` records whose ``meta.group`` is
  shared by the members of one counterfactual group. The members differ only in the words of one
  attribute axis and carry different values in ``meta.attributes[axis]``.
* ``attribute_equalisation`` and ``adversarial`` read **contexts**: ``{"id", "text", "loss":
  "none", "meta": {"kind": "context", ...}}``, a neutral text that ends where a pronoun or person
  word of the axis is a natural next word ("When the glazier finally finished the inspection,").
  ``meta.association`` gives the stereotyped lean of the context's content where our filler
  lists know it (``{"gender": "male"}``), and ``meta.next`` the words of each value that would
  come next (``{"female": ["she"], "male": ["he"]}``).

Every record carries ``meta.axis``, ``meta.domain`` and ``meta.family``: the template frame
(``occupations/eleven_years``) or, for corpus text, the source file's name and document
(``wiki.train.tokens/doc12``). The split holds out whole families (see
:func:`fairtune.curation.hygiene.split`), so validation measures generalisation to frames and
documents never trained on.

**Built-in sources** (``data/pairs/``): for each domain (``occupations``, ``traits``, ``family``,
``sports``, ``emotions``, ``activities``) a filler list with a stereotyped ``lean`` column
(its header cites where the lean comes from) and, per axis, a frames file of our own sentences:
pair frames, filled with every value of the axis (``meta.kind`` ``template``), and context frames,
filled with each filler only. The occupations are a training list disjoint from the audits'
occupation lists. A frame's person slots (``{kin}``, ``{name}``...) are drawn per group from
``random.Random(f"{seed}|{axis}|{family}|{filler}")``, so the output depends on the seed alone.

**Corpus text** (``FILES``): plain text or JSONL, read line by line, never whole, so a file of
any size streams in constant memory (only the kept pairs are held). Plain text: a blank line ends
a document; in a file whose first line is a WikiText heading (``= Title =``) a top-level heading
starts each document instead, blank lines separate paragraphs, section headings (``= = Section =
= =``) are skipped, and WikiText's tokenisation (``@-@``, a space before punctuation) is undone.
JSONL: one record a line, any fairtune record format; a ``text`` record is a document, a chat or
prompt/completion record is swapped whole. Paragraphs are split into sentences, and windows of
one or two sentences (two where the pair fits in :data:`MAX_WORDS`) that hold a word of the axis
are swapped by CDA (:func:`fairtune.curation.cda.augment_records`, two-sided). Windows are dropped
and counted by reason (:data:`DROP_REASONS`); corpus records get domain ``corpus``.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from fairtune.curation.records import Record, meta, validate_record
from fairtune.errors import InputError

AXES: tuple[str, ...] = ("gender", "religion")
DOMAINS: tuple[str, ...] = ("occupations", "traits", "family", "sports", "emotions", "activities")
CORPUS_DOMAIN = "corpus"
BUILTIN_SOURCE = "pairs:builtin"
LEANS = ("female", "male", "neutral")
MIN_WORDS, MAX_WORDS = 6, 60          # a window's length in words, both ends included
DROP_REASONS = ("nothing_to_swap", "too_short", "too_long", "ambiguous_value", "swap_failed")
CDA_BATCH = 64                        # windows swapped per augment_records call
FLUSH_CHARS = 64_000                  # a paragraph buffer longer than this is windowed early
JSONL_SUFFIXES = (".jsonl", ".ndjson")

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
_SENTENCE_START = re.compile(r"(?:^|[.!?][\"')\]]?\s+)[\"'(\[]?$")
_ARTICLE = re.compile(r"\x00([aA])\x00(\s+)([^\w\s]*)(\w+)")
_ID = re.compile(r"^[\w.-]+$")


def data_dir() -> Path:
    return Path(str(resources.files("fairtune.curation") / "data" / "pairs"))


def check_axis(axis: str) -> str:
    if axis not in AXES:
        raise InputError(f"unknown axis '{axis}' for pairs (choose from {', '.join(AXES)})", field="axis")
    return axis


def check_domains(domains: Iterable[str] | None) -> tuple[str, ...]:
    if domains is None:
        return DOMAINS
    chosen = tuple(dict.fromkeys(domains))
    for domain in chosen:
        if domain not in DOMAINS:
            raise InputError(f"unknown domain '{domain}' (built-in domains: {', '.join(DOMAINS)})", field="domain")
    if not chosen:
        raise InputError("no domain given", field="domain")
    return chosen


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _data_lines(path: Path) -> Iterator[tuple[int, str]]:
    from fairtune.readers import read_text

    for row, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield row, line


# -- built-in data files ----------------------------------------------------------------------

@dataclass(frozen=True)
class Filler:
    text: str
    lean: str            # female | male | neutral


@lru_cache(maxsize=None)
def load_fillers(domain: str) -> tuple[str, tuple[Filler, ...]]:
    """The domain's placeholder name (the first column's header: ``occupation``...) and fillers."""
    path = data_dir() / f"{domain}.tsv"
    header: list[str] | None = None
    fillers: list[Filler] = []
    for row, line in _data_lines(path):
        cells = [c.strip() for c in line.split("\t")]
        if header is None:
            header = cells
            if len(header) < 2 or header[1] != "lean" or not _ID.match(header[0]):
                raise InputError("the header must name the filler column, then 'lean'", file=path, row=row)
            continue
        if len(cells) < 2 or not cells[0]:
            raise InputError("expected a filler and its lean", file=path, row=row, field=header[0])
        if cells[1] not in LEANS:
            raise InputError(f"lean must be one of {', '.join(LEANS)}, got {cells[1]!r}", file=path, row=row,
                             field="lean")
        fillers.append(Filler(" ".join(cells[0].split()), cells[1]))
    if header is None or not fillers:
        raise InputError("no fillers in the file", file=path)
    return header[0], tuple(fillers)


@dataclass(frozen=True)
class Terms:
    """An axis's slot words: ``slots[slot]`` is a tuple of rows, each the words for every value."""

    axis: str
    values: tuple[str, ...]
    slots: dict[str, tuple[tuple[str, ...], ...]]

    def words(self, slot: str) -> dict[str, list[str]]:
        """Every word of a slot, by value (what may come next after a context)."""
        return {value: list(dict.fromkeys(row[i] for row in self.slots[slot])) for i, value in enumerate(self.values)}


@lru_cache(maxsize=None)
def load_terms(axis: str) -> Terms:
    from fairtune.curation.cda import axis_values

    path = data_dir() / f"terms_{axis}.tsv"
    header: list[str] | None = None
    slots: dict[str, list[tuple[str, ...]]] = {}
    for row, line in _data_lines(path):
        cells = [c.strip() for c in line.split("\t")]
        if header is None:
            header = cells
            if header[0] != "slot" or tuple(header[1:]) != axis_values(axis):
                raise InputError(f"the header must be 'slot' and the values {', '.join(axis_values(axis))}",
                                 file=path, row=row)
            continue
        if len(cells) != len(header) or not all(cells):
            raise InputError(f"expected a slot and {len(header) - 1} words", file=path, row=row)
        slots.setdefault(cells[0], []).append(tuple(cells[1:]))
    if header is None:
        raise InputError("no header line", file=path)
    if axis == "gender":
        slots["name"] = _cda_names()
        titles = slots.pop("title", [])
        surnames = [line.strip() for _, line in _data_lines(data_dir() / "surnames.txt")]
        slots["title"] = [tuple(f"{t} {s}" for t in row) for row in titles for s in surnames]
    return Terms(axis, tuple(header[1:]), {k: tuple(v) for k, v in slots.items()})


def _cda_names() -> list[tuple[str, ...]]:
    """The given-name pairs of the CDA gender word list (the first form of each cell)."""
    from fairtune.curation.cda import wordlist_path

    names = []
    for line in wordlist_path("gender").read_text(encoding="utf-8").splitlines():
        cells = line.split("\t")
        if cells[0] == "name" and len(cells) >= 3:
            names.append((cells[1].split("|")[0].strip(), cells[2].split("|")[0].strip()))
    return names


@dataclass(frozen=True)
class Frame:
    id: str
    kind: str            # pair | context
    text: str
    next: str | None     # contexts: the slot whose words come next
    domain: str
    file: str
    row: int

    @property
    def family(self) -> str:
        return f"{self.domain}/{self.id}"

    def slots(self, terms: Terms) -> list[str]:
        return sorted({name.lower() for name in _PLACEHOLDER.findall(self.text) if name.lower() in terms.slots})


def frames_path(axis: str, domain: str) -> Path:
    return data_dir() / "frames" / axis / f"{domain}.txt"


@lru_cache(maxsize=None)
def load_frames(axis: str, domain: str) -> tuple[Frame, ...]:
    """The pair and context frames of one axis and domain; a bad line is an InputError naming it."""
    path = frames_path(axis, domain)
    terms = load_terms(axis)
    filler_name, _ = load_fillers(domain)
    known = {"a", filler_name, *terms.slots}
    frames: list[Frame] = []
    seen: dict[str, int] = {}
    for row, line in _data_lines(path):
        parts = [p.strip() for p in line.split(" | ")]
        kind = parts[0]
        if kind not in ("pair", "context") or len(parts) != (3 if kind == "pair" else 4):
            raise InputError("expected 'pair | id | text' or 'context | id | next | text'", file=path, row=row)
        frame_id, text = parts[1], parts[-1]
        nxt = parts[2] if kind == "context" else None
        if not _ID.match(frame_id):
            raise InputError("letters, digits, '_', '-' and '.' only", file=path, row=row, field="id")
        if frame_id in seen:
            raise InputError(f"frame id '{frame_id}' already used on row {seen[frame_id]}", file=path, row=row,
                             field="id")
        seen[frame_id] = row
        names = [n.lower() for n in _PLACEHOLDER.findall(text)]
        unknown = [n for n in names if n not in known]
        if unknown or "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
            what = f"unknown placeholder '{{{unknown[0]}}}'" if unknown else "unbalanced '{' or '}'"
            raise InputError(f"{what} (known: {', '.join('{' + k + '}' for k in sorted(known))})", file=path,
                             row=row, field="text")
        if filler_name not in names:
            raise InputError(f"no {{{filler_name}}} placeholder", file=path, row=row, field="text")
        slots = [n for n in names if n in terms.slots]
        if kind == "pair" and not slots:
            raise InputError(f"a pair frame needs a word of the {axis} axis to swap", file=path, row=row,
                             field="text")
        if kind == "context":
            if slots:
                raise InputError(f"a context must be neutral: '{{{slots[0]}}}' is a word of the {axis} axis",
                                 file=path, row=row, field="text")
            if nxt not in terms.slots:
                raise InputError(f"unknown next slot {nxt!r} (slots: {', '.join(sorted(terms.slots))})",
                                 file=path, row=row, field="next")
        frames.append(Frame(frame_id, kind, text, nxt, domain, str(path), row))
    if not frames:
        raise InputError("no frames in the file", file=path)
    return tuple(frames)


# -- filling -----------------------------------------------------------------------------------

def _capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]


def fill(text: str, words: dict[str, str]) -> str:
    """The frame with each ``{name}`` replaced by ``words[name]`` (``{a}``: "a"/"an" by the next
    word; a capital placeholder or one that opens a sentence gives a capital)."""
    from fairtune.curation.templates import indefinite_article

    out: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        out.append(text[position:match.start()])
        position = match.end()
        name = match.group(1)
        capital = name[:1].isupper() or bool(_SENTENCE_START.search("".join(out)))
        if name.lower() == "a":
            out.append("\x00A\x00" if capital else "\x00a\x00")
            continue
        word = words[name.lower()]
        out.append(_capitalise(word) if capital else word)
    out.append(text[position:])

    def article(match: re.Match) -> str:
        chosen = indefinite_article(match.group(4))
        return f"{_capitalise(chosen) if match.group(1) == 'A' else chosen}{match.group(2)}{match.group(3)}{match.group(4)}"

    return _ARTICLE.sub(article, "".join(out)).replace("\x00A\x00", "A").replace("\x00a\x00", "a")


# -- the built-in sources ----------------------------------------------------------------------

def builtin_records(axis: str, *, domains: Sequence[str] | None = None, contexts: bool = True,
                    seed: int = 0) -> list[Record]:
    """Pair groups (every value of the axis, one frame x one filler) and contexts of the chosen
    domains, in a fixed order; the same arguments always give the same records."""
    check_axis(axis)
    terms = load_terms(axis)
    records: list[Record] = []
    for domain in check_domains(domains):
        filler_name, fillers = load_fillers(domain)
        for frame in load_frames(axis, domain):
            if frame.kind == "context" and not contexts:
                continue
            for filler in fillers:
                if frame.kind == "pair":
                    records += _pair_group(frame, filler, filler_name, terms, seed)
                else:
                    records.append(_context(frame, filler, filler_name, terms))
    return records


def _pair_group(frame: Frame, filler: Filler, filler_name: str, terms: Terms, seed: int) -> list[Record]:
    rng = random.Random(f"{seed}|{terms.axis}|{frame.family}|{filler.text}")
    rows = {slot: rng.choice(terms.slots[slot]) for slot in frame.slots(terms)}
    group = f"pairs:{terms.axis}:{frame.domain}:{frame.id}:{_slug(filler.text)}"
    members = []
    for index, value in enumerate(terms.values):
        words = {slot: row[index] for slot, row in rows.items()}
        words[filler_name] = filler.text
        members.append({
            "id": f"{group.replace(':', '-')}-{value}", "text": fill(frame.text, words),
            "meta": {"source": BUILTIN_SOURCE, "kind": "template", "axis": terms.axis, "domain": frame.domain,
                     "family": frame.family, "group": group, "attributes": {terms.axis: value},
                     "frame": frame.id, "filler": filler.text}})
    return members


def _context(frame: Frame, filler: Filler, filler_name: str, terms: Terms) -> Record:
    group = f"context:{terms.axis}:{frame.domain}:{frame.id}:{_slug(filler.text)}"
    info: dict[str, Any] = {"source": BUILTIN_SOURCE, "kind": "context", "axis": terms.axis, "domain": frame.domain,
                            "family": frame.family, "group": group}
    if terms.axis == "gender" and filler.lean in ("female", "male"):
        info["association"] = {"gender": filler.lean}
    info.update({"next": terms.words(frame.next or ""), "frame": frame.id, "filler": filler.text})
    return {"id": group.replace(":", "-"), "text": fill(frame.text, {filler_name: filler.text}), "loss": "none",
            "meta": info}


def builtin_sha256() -> str:
    """One hash of every built-in data file (fillers, terms, frames), for the data card."""
    import hashlib

    digest = hashlib.sha256()
    root = data_dir()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def sample_groups(records: list[Record], n: int, seed: int) -> list[Record]:
    """At most ``n`` pair groups (a seeded sample, order kept); contexts are kept."""
    from fairtune.curation.hygiene import group_of

    groups = list(dict.fromkeys(group_of(r) for r in records if meta(r).get("kind") != "context"))
    if len(groups) <= n:
        return records
    rng = random.Random(f"{seed}|max-pairs")
    kept = set(rng.sample(groups, n))
    return [r for r in records if meta(r).get("kind") == "context" or group_of(r) in kept]


# -- corpus text -------------------------------------------------------------------------------

@dataclass
class FileStats:
    file: str
    format: str = "text"     # text | wikitext | jsonl
    lines: int = 0           # lines read (fewer than the file's when reading stopped early)
    documents: int = 0
    windows: int = 0
    pairs: int = 0
    records: int = 0         # training records made from it (both members of each pair)


@dataclass
class CorpusStats:
    """What happened to every window of the input files."""

    files: list[FileStats] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    stopped_early: bool = False
    max_pairs: int | None = None

    @property
    def windows(self) -> int:
        return sum(f.windows for f in self.files)

    @property
    def pairs(self) -> int:
        return sum(f.pairs for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {"windows": self.windows, "pairs": self.pairs,
                "dropped": {reason: self.dropped.get(reason, 0) for reason in DROP_REASONS},
                "stopped_early": self.stopped_early, "max_pairs": self.max_pairs,
                "window_words": [MIN_WORDS, MAX_WORDS], "files": [vars(f) for f in self.files]}


# Sentence splitting: a regex and a short abbreviation list. Windows only need sentence ends that
# are right most of the time, and the usual libraries either need model files downloaded at run
# time (NLTK's punkt) or are heavy to install and slow per line (spaCy) for multi-GB inputs.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_ABBREVIATIONS = frozenset("""mr mrs ms mx dr prof st mt jr sr vs etc eg ie no nos fig figs vol pp ca inc ltd co
    corp gen col lt sgt capt cmdr adm rev hon gov sen rep pres jan feb mar apr jun jul aug sep sept oct nov dec
    approx dept est op cf al""".split())
_INITIALS = re.compile(r"(?:[a-z]\.)*[a-z]")


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (the end punctuation and closing quotes stay with the sentence)."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if text[match.start()] == "." and match.start() > start:
            # "Mr. Smith", "J. R. R. Tolkien", "U.S. Army": a period after these ends no sentence.
            token = text[start:match.start()].rsplit(None, 1)[-1].lstrip("\"'“‘([").lower()
            if token in _ABBREVIATIONS or _INITIALS.fullmatch(token):
                continue
        sentences.append(text[start:match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


_WIKITEXT_FIXES = ((re.compile(r" @([-.,])@ "), r"\1"), (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),
                   (re.compile(r"([(\[{$£]) "), r"\1"), (re.compile(r" (['’](?:s|re|ve|ll|d|m)\b)"), r"\1"),
                   (re.compile(r" (n't)\b"), r"\1"))


def detokenise_wikitext(line: str) -> str:
    """Undo WikiText's tokenisation: ``1 @,@ 000`` -> ``1,000``, ``game 's`` -> ``game's``."""
    for pattern, replacement in _WIKITEXT_FIXES:
        line = pattern.sub(replacement, line)
    return line


def heading_level(line: str) -> int:
    """1 for ``= Title =``, 2 for ``= = Section = =``..., 0 for a line that is not a heading."""
    tokens = line.split()
    if len(tokens) < 3 or tokens[0] != "=" or tokens[-1] != "=":
        return 0
    level = 0
    while level < len(tokens) and tokens[level] == "=":
        level += 1
    trailing = 0
    while trailing < len(tokens) and tokens[-1 - trailing] == "=":
        trailing += 1
    return level if level == trailing and level * 2 < len(tokens) else 0


@lru_cache(maxsize=None)
def _trigger_words(axis: str) -> frozenset[str]:
    """Lower-case words that can start a term of the axis: a cheap test before running CDA."""
    from fairtune.curation import cda

    words = {re.findall(r"[^\W\d_]+", key)[0] for key in cda._lexicon(axis).index if re.search(r"[^\W\d_]", key)}
    if axis == "gender":
        words |= set(cda._PRONOUN_VALUE)
    return frozenset(words)


def has_term(text: str, axis: str) -> bool:
    return not _trigger_words(axis).isdisjoint(re.findall(r"[^\W\d_]+", text.lower()))


@dataclass
class _Window:
    record: Record
    stats: FileStats


class _Corpus:
    """Streams the input files into windows, swaps them in batches and keeps the good pairs."""

    def __init__(self, axis: str, seed: int, max_pairs: int | None, progress: bool):
        self.axis, self.seed, self.max_pairs, self.progress = axis, seed, max_pairs, progress
        self.stats = CorpusStats(max_pairs=max_pairs)
        self.records: list[Record] = []
        self.pending: list[_Window] = []

    @property
    def full(self) -> bool:
        return self.max_pairs is not None and self.stats.pairs >= self.max_pairs

    def run(self, paths: Sequence[Path]) -> None:
        from fairtune.engine.progress import progress_bar

        for path in paths:
            _check_file(path)
        with progress_bar(self.progress) as bar:
            for path in paths:
                if self.full:
                    break
                file_stats = FileStats(str(path), "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "text")
                self.stats.files.append(file_stats)
                task = bar.add_task(f"pairs: reading {path.name}", total=path.stat().st_size)
                advance = _Advance(bar, task)
                lines = _read_lines(path, file_stats, advance)
                with contextlib.closing(lines):
                    reader = _jsonl_windows if file_stats.format == "jsonl" else _text_windows
                    for reason, record in reader(path, lines, file_stats, self.axis):
                        if reason is not None:
                            file_stats.windows += 1
                            self.stats.dropped[reason] += 1
                            continue
                        self.pending.append(_Window(record, file_stats))
                        if len(self.pending) >= self._batch_size():
                            self._flush()
                            if self.full:
                                break
                self._flush()
                advance.done()
        if self.full:
            self.stats.stopped_early = True

    def _batch_size(self) -> int:
        # Near --max-pairs, swap smaller batches, so reading stops soon after the last pair needed.
        return CDA_BATCH if self.max_pairs is None else max(1, min(CDA_BATCH, self.max_pairs - self.stats.pairs))

    def _flush(self) -> None:
        from fairtune.curation.cda import augment_records, axis_values

        if not self.pending:
            return
        batch, self.pending = self.pending, []
        out = augment_records([w.record for w in batch], axes=(self.axis,), mode="two-sided", seed=self.seed)
        members: dict[str, list[Record]] = {}
        for record in out:
            members.setdefault(str(meta(record)["group"]), []).append(record)
        values = axis_values(self.axis)
        for window in batch:
            if self.full:
                return
            group = members.get(str(window.record["meta"]["group"]), [])
            window.stats.windows += 1
            reason = _pair_problem(group, self.axis, values)
            if reason is not None:
                self.stats.dropped[reason] += 1
                continue
            self.records += group[:2]
            window.stats.pairs += 1
            window.stats.records += 2


def _pair_problem(group: list[Record], axis: str, values: tuple[str, ...]) -> str | None:
    """Why an original and its counterfactual cannot be a pair, or None when they can."""
    if len(group) < 2:
        return "nothing_to_swap"
    original, counterfactual = group[0], group[1]
    before = (meta(original).get("attributes") or {}).get(axis)
    after = (meta(counterfactual).get("attributes") or {}).get(axis)
    if before not in values:
        return "ambiguous_value"     # e.g. as many female as male words: no side to pair
    if after not in values or after == before or _body(original) == _body(counterfactual):
        return "swap_failed"
    return None


def _body(record: Record) -> Any:
    return record.get("text", record.get("messages", [record.get("prompt"), record.get("completion")]))


class _Advance:
    """Progress in bytes, pushed to the bar every megabyte (a call per line would cost more)."""

    def __init__(self, bar: Any, task: Any):
        self.bar, self.task, self.pending = bar, task, 0

    def __call__(self, n: int) -> None:
        self.pending += n
        if self.pending >= 1 << 20:
            self.bar.advance(self.task, self.pending)
            self.pending = 0

    def done(self) -> None:
        self.bar.advance(self.task, self.pending)
        self.pending = 0


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", file=path)
    if path.is_dir():
        raise InputError("is a directory, expected a file", file=path)
    if path.suffix.lower() == ".json":
        raise InputError("a JSON document; give JSONL (one record a line) or plain text", file=path)
    if path.stat().st_size == 0:
        raise InputError("empty file, expected text" + (" (JSON lines)" if path.suffix.lower() in JSONL_SUFFIXES
                                                        else ""), file=path)


def _read_lines(path: Path, stats: FileStats, advance: Callable[[int], None]) -> Iterator[tuple[int, str]]:
    """``(row, line)`` of every line, decoded one at a time; a bad byte names its row."""
    blank = True
    with open(path, "rb") as handle:
        for row, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                                 "save the file as UTF-8", file=path, row=row) from None
            if row == 1:
                line = line.removeprefix("\ufeff")
            stats.lines = row
            advance(len(raw))
            blank = blank and not line.strip()
            yield row, line.rstrip("\r\n")
    if blank:
        raise InputError("empty file, expected text" + (" (JSON lines)" if stats.format == "jsonl" else ""),
                         file=path)


def _window_record(path: Path, doc: str, index: int, text: str, axis: str) -> Record:
    record_id = f"{_slug(path.name)}-{_slug(doc)}-w{index}"
    return {"id": record_id, "text": text,
            "meta": {"source": str(path), "axis": axis, "domain": CORPUS_DOMAIN, "family": f"{path.name}/{doc}",
                     "group": record_id}}


def _paragraph_windows(text: str, axis: str) -> Iterator[tuple[str | None, str | None]]:
    """``(reason, None)`` for a dropped window, ``(None, text)`` for a kept one."""
    sentences = split_sentences(text)
    lengths = [len(s.split()) for s in sentences]
    i = 0
    while i < len(sentences):
        if not has_term(sentences[i], axis):
            yield "nothing_to_swap", None
            i += 1
            continue
        if i + 1 < len(sentences) and lengths[i] + lengths[i + 1] <= MAX_WORDS:
            window, words, i = f"{sentences[i]} {sentences[i + 1]}", lengths[i] + lengths[i + 1], i + 2
        else:
            window, words, i = sentences[i], lengths[i], i + 1
        if words < MIN_WORDS:
            yield "too_short", None
        elif words > MAX_WORDS:
            yield "too_long", None
        else:
            yield None, window


def _text_windows(path: Path, lines: Iterator[tuple[int, str]], stats: FileStats,
                  axis: str) -> Iterator[tuple[str | None, Record | None]]:
    mode: str | None = None          # "wikitext" or "text", decided by the first non-blank line
    doc = 0
    new_doc = True
    windows_in_doc = 0
    buffer: list[str] = []
    size = 0

    def windows(text: str) -> Iterator[tuple[str | None, Record | None]]:
        nonlocal windows_in_doc
        for reason, window in _paragraph_windows(text, axis):
            if reason is not None:
                yield reason, None
            else:
                windows_in_doc += 1
                yield None, _window_record(path, f"doc{doc}", windows_in_doc, window, axis)

    def flush(partial: bool = False) -> Iterator[tuple[str | None, Record | None]]:
        nonlocal buffer, size
        if not buffer:
            return
        text = " ".join(buffer)
        rest: list[str] = []
        if partial:   # a very long paragraph: keep its last (perhaps unfinished) sentence for later
            sentences = split_sentences(text)
            text, rest = " ".join(sentences[:-1]), sentences[-1:]
            if rest and len(rest[0]) > FLUSH_CHARS:   # no sentence end in sight: far too long anyway
                yield "too_long", None
                rest = []
        buffer, size = rest, sum(len(r) for r in rest)
        if text:
            yield from windows(text)

    for _, line in lines:
        stripped = line.strip()
        if not stripped:
            yield from flush()
            if mode == "text":
                new_doc = True
            continue
        level = heading_level(stripped)
        if mode is None:
            mode = "wikitext" if level else "text"
            stats.format = mode
        if level:
            yield from flush()
            new_doc = new_doc or level == 1
            continue
        if new_doc:
            doc += 1
            stats.documents += 1
            windows_in_doc = 0
            new_doc = False
        if mode == "wikitext":
            yield from windows(detokenise_wikitext(stripped))
        else:
            buffer.append(stripped)
            size += len(stripped)
            if size > FLUSH_CHARS:
                yield from flush(partial=True)
    yield from flush()


def _jsonl_windows(path: Path, lines: Iterator[tuple[int, str]], stats: FileStats,
                   axis: str) -> Iterator[tuple[str | None, Record | None]]:
    for row, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON at column {exc.colno}: {exc.msg}", file=path, row=row) from None
        record = validate_record(obj, file=path, row=row)
        stats.documents += 1
        doc = str(record["id"]) if "id" in record else f"row{row}"
        if "text" in record:
            index = 0
            for paragraph in re.split(r"\n\s*\n", record["text"]):
                for reason, window in _paragraph_windows(" ".join(paragraph.split()), axis):
                    if reason is not None:
                        yield reason, None
                    else:
                        index += 1
                        yield None, _window_record(path, doc, index, window, axis)
        else:   # chat or prompt/completion: swapped whole
            record_id = f"{_slug(path.name)}-{_slug(doc)}"
            info = {**meta(record), "source": str(path), "axis": axis, "domain": CORPUS_DOMAIN,
                    "family": f"{path.name}/{doc}", "group": record_id}
            info.pop("attributes", None)
            info.pop("kind", None)
            yield None, {**{k: v for k, v in record.items() if k not in ("id", "meta")}, "id": record_id,
                         "meta": info}


def corpus_records(paths: Sequence[str | Path], *, axis: str, seed: int = 0, max_pairs: int | None = None,
                   progress: bool = False) -> tuple[list[Record], CorpusStats]:
    """Pairs from the files (module docstring), at most ``max_pairs`` of them (reading stops)."""
    check_axis(axis)
    corpus = _Corpus(axis, seed, max_pairs, progress)
    corpus.run([Path(p) for p in paths])
    return corpus.records, corpus.stats
