"""Balanced templates: occupation x attribute sentences and chat Q/A pairs, every value equally often.

A *frame* is a sentence (or a user/assistant pair) with placeholders; filling one frame for one
occupation with every value of an attribute axis gives one *group* of records that differ only
in the attribute's words. Every group holds every value exactly once, so the counts per value
are equal by construction, and the group travels whole through dedup and the train/validation
split (:mod:`fairtune.curation.hygiene`).

Frames (``data/templates/frames_text.txt``, ``frames_chat.jsonl``) are our own, written for
fairtune, and deliberately unlike the audit suites' sentences (no shared frame, no shared
8-word sequence), so that training on them cannot inflate an audit score by memorisation.

Placeholders:

* ``{occupation}``: the occupation name. On a *term* axis (age: young/older) its first mention
  becomes "<term> <occupation>" ("a young nurse"); later mentions stay bare ("the nurse").
* ``{a}``: the indefinite article, "a" or "an" by the sound of the word that follows it once
  filled ("an electrician", "a young electrician", "an older nurse", "a home health aide").
* ``{subj}`` ``{obj}`` ``{poss}`` ``{refl}``: the value's pronoun set (she/her/her/herself,
  he/him/his/himself, they/them/their/themselves). Singular *they* takes "themselves".
* A capitalised name (``{Subj}``, ``{A}``...) forces a capital; a placeholder that opens a
  sentence (start of the text, after ``.``/``!``/``?`` or a line break, or after an opening quote
  there) is capitalised anyway.
* ``{was|were}``: verb agreement, spelled out by the frame: the first form after a singular
  pronoun set (he, she), the second after a plural one (they). Our frames are mostly past tense
  with agreement-free verbs, and give both forms wherever a pronoun is the subject of an
  agreeing verb (was, is, has, the present tense).

Axes and their values live in ``data/templates/axes.json`` (``pronoun_sets`` and ``axes``); a file
of the same shape passed as ``axes_file`` adds axes or replaces ones of the same name.

A user frames file replaces the built-in frames: a text file with one frame a line
(``<id> | <text>`` or just ``<text>``; ``#`` starts a comment) gives text frames; a JSONL file
gives ``{"id", "text"}`` text frames and ``{"id", "user", "assistant"}`` chat frames. An unknown
placeholder is an :class:`~fairtune.errors.InputError` naming the file, row and field.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fairtune.curation.card import attribute_counts
from fairtune.errors import InputError
from fairtune.readers import read_csv_rows, read_jsonl_rows, read_text

FORMATS = ("text", "chat")
PRONOUN_FIELDS = ("subj", "obj", "poss", "refl")
NUMBERS = ("singular", "plural")
PLACEHOLDERS = ("occupation", "a") + PRONOUN_FIELDS
DEFAULT_AXIS = "gender"
BUILTIN_SOURCE = "templates:builtin"

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FRAME_LINE = re.compile(r"^([\w.-]+)\s+\|\s+(.+)$")
_ID = re.compile(r"^[\w.-]+$")
_ARTICLE = re.compile(r"\x00([aA])\x00(\s+)([^\w\s]*)(\w+)")
_SENTENCE_START = re.compile(r"(?:^|[.!?][\"')\]]?\s+|\n\s*)[\"'(\[]?$")
_CHAT_FIELDS = ("user", "assistant")


# -- data files ----------------------------------------------------------------------------------

def data_dir() -> Path:
    return Path(str(resources.files("fairtune.curation") / "data" / "templates"))


def builtin_text_frames_path() -> Path:
    return data_dir() / "frames_text.txt"


def builtin_chat_frames_path() -> Path:
    return data_dir() / "frames_chat.jsonl"


def builtin_axes_path() -> Path:
    return data_dir() / "axes.json"


def builtin_occupations_path() -> Path:
    return Path(str(resources.files("fairtune.audits") / "data" / "occupations.csv"))


# -- articles --------------------------------------------------------------------------------------

# Spelling is not sound: these vowel-letter starts sound like "you"/"wuh", these h-words are silent.
_CONSONANT_SOUND = ("unic", "unif", "unio", "unis", "unit", "univ", "usa", "use", "usu", "uten", "uti",
                    "ura", "uro", "eu", "ewe", "one", "once")
_VOWEL_SOUND = ("hour", "honest", "honor", "honour", "heir")
_VOWEL_LETTER_NAMES = set("aefhilmnorsx")  # "an MRI", "an X-ray", "an HR manager"


def indefinite_article(phrase: str) -> str:
    """``a`` or ``an`` for the phrase, by the sound of its first word."""
    words = re.findall(r"[\w'-]+", phrase)
    if not words:
        return "a"
    word = words[0]
    if len(word) > 1 and word.isupper():  # an acronym read letter by letter
        return "an" if word[0].lower() in _VOWEL_LETTER_NAMES else "a"
    lower = word.lower()
    if lower.startswith(_VOWEL_SOUND):
        return "an"
    if lower.startswith(_CONSONANT_SOUND):
        return "a"
    return "an" if lower[0] in "aeiou" else "a"


# -- axes ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AxisValue:
    """One value of an axis: the words that express it."""

    name: str
    pronouns: dict[str, str]      # subj, obj, poss, refl
    number: str                   # singular | plural: picks {was|were}
    term: str | None = None       # a modifier of the occupation's first mention (term axes)


@dataclass(frozen=True)
class Axis:
    name: str
    values: dict[str, AxisValue]

    @property
    def by_term(self) -> bool:
        return any(v.term for v in self.values.values())


def load_axes(axes_file: str | Path | None = None) -> dict[str, Axis]:
    """The built-in axes, with those of ``axes_file`` added (same name: replaced)."""
    axes = _read_axes(builtin_axes_path(), {})
    if axes_file is not None:
        builtin_sets = _read_json_object(builtin_axes_path()).get("pronoun_sets", {})
        axes.update(_read_axes(Path(axes_file), builtin_sets))
    return axes


def _read_json_object(path: Path) -> dict[str, Any]:
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON at column {exc.colno}: {exc.msg}", file=path, row=exc.lineno) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object with 'axes' (and optionally 'pronoun_sets')", file=path)
    return data


def _read_axes(path: Path, inherited_sets: dict[str, Any]) -> dict[str, Axis]:
    data = _read_json_object(path)
    raw_sets = data.get("pronoun_sets", {})
    if not isinstance(raw_sets, dict):
        raise InputError("expected an object of pronoun sets", file=path, field="pronoun_sets")
    sets: dict[str, tuple[dict[str, str], str]] = {}
    for name, raw in {**inherited_sets, **raw_sets}.items():
        where = f"pronoun_sets.{name}"
        if not isinstance(raw, dict):
            raise InputError("expected an object with subj, obj, poss, refl, number", file=path, field=where)
        for key in PRONOUN_FIELDS:
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise InputError("missing or empty", file=path, field=f"{where}.{key}")
        number = raw.get("number", "singular")
        if number not in NUMBERS:
            raise InputError(f"must be one of {', '.join(NUMBERS)}, got {number!r}", file=path,
                             field=f"{where}.number")
        sets[name] = ({key: raw[key].strip() for key in PRONOUN_FIELDS}, number)

    raw_axes = data.get("axes")
    if not isinstance(raw_axes, dict) or not raw_axes:
        raise InputError("expected a non-empty object of axes", file=path, field="axes")
    axes: dict[str, Axis] = {}
    for axis_name, raw_axis in raw_axes.items():
        where = f"axes.{axis_name}.values"
        values_raw = raw_axis.get("values") if isinstance(raw_axis, dict) else None
        if not isinstance(values_raw, dict) or len(values_raw) < 2:
            raise InputError("expected an object of at least two values", file=path, field=where)
        values: dict[str, AxisValue] = {}
        for value_name, raw_value in values_raw.items():
            vwhere = f"{where}.{value_name}"
            if not isinstance(raw_value, dict):
                raise InputError("expected an object with 'pronouns' (and optionally 'term')", file=path,
                                 field=vwhere)
            set_name = raw_value.get("pronouns")
            if set_name not in sets:
                raise InputError(f"unknown pronoun set {set_name!r} (known: {', '.join(sets)})", file=path,
                                 field=f"{vwhere}.pronouns")
            term = raw_value.get("term")
            if term is not None and (not isinstance(term, str) or not term.strip() or "{" in term):
                raise InputError("expected a non-empty word or phrase", file=path, field=f"{vwhere}.term")
            pronouns, number = sets[set_name]
            values[value_name] = AxisValue(value_name, pronouns, number, " ".join(term.split()) if term else None)
        terms = [v.term for v in values.values()]
        if any(terms) and not all(terms):
            raise InputError("either every value of an axis has a 'term' or none has", file=path, field=where)
        if len({(v.term, tuple(sorted(v.pronouns.items())), v.number) for v in values.values()}) < len(values):
            raise InputError("two values would fill the frames with the same words", file=path, field=where)
        axes[axis_name] = Axis(axis_name, values)
    return axes


# -- frames ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """A text frame (``parts`` = {"text": ...}) or a chat frame ({"user": ..., "assistant": ...})."""

    id: str
    format: str
    parts: dict[str, str]
    file: str
    row: int

    @property
    def has_pronoun(self) -> bool:
        # Verb pairs ({was|were}) do not count: they only agree with a pronoun subject.
        return any(name.lower() in PRONOUN_FIELDS
                   for text in self.parts.values() for name in _PLACEHOLDER.findall(text))


def check_placeholders(text: str, *, file: str | Path, row: int, field: str) -> None:
    """Every ``{...}`` is a known placeholder or a ``{singular|plural}`` pair; braces balance."""
    for name in _PLACEHOLDER.findall(text):
        if "|" in name:
            forms = name.split("|")
            if len(forms) != 2 or not all(f.strip() for f in forms):
                raise InputError(f"'{{{name}}}' must be two verb forms, '{{singular|plural}}' as in "
                                 "'{was|were}'", file=file, row=row, field=field)
            continue
        if name.lower() not in PLACEHOLDERS or (name != name.lower() and name != name[:1].upper() + name[1:].lower()):
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise InputError(f"unknown placeholder '{{{name}}}' (known: {known}, capitalised forms, and "
                             "{singular|plural} verb pairs)", file=file, row=row, field=field)
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        raise InputError("unbalanced '{' or '}'", file=file, row=row, field=field)


def _make_frame(frame_id: str, fmt: str, parts: dict[str, str], *, file: Path, row: int) -> Frame:
    for field, text in parts.items():
        check_placeholders(text, file=file, row=row, field=field)
    if not any("{occupation}" in text.lower() for text in parts.values()):
        raise InputError("no {occupation} placeholder", file=file, row=row,
                         field="text" if fmt == "text" else "user")
    return Frame(frame_id, fmt, dict(parts), str(file), row)


def read_frames(path: str | Path) -> list[Frame]:
    """Frames of a ``.jsonl`` file (text and chat) or of a text file (text frames, one a line)."""
    path = Path(path)
    frames: list[Frame] = []
    if path.suffix.lower() == ".jsonl":
        for row, obj in read_jsonl_rows(path):
            unknown = sorted(set(obj) - {"id", "text", *_CHAT_FIELDS})
            if unknown:
                raise InputError("unknown field (a frame has 'id' and 'text', or 'id', 'user' and 'assistant')",
                                 file=path, row=row, field=unknown[0])
            frame_id = str(obj.get("id", f"row{row}"))
            if not _ID.match(frame_id):
                raise InputError("letters, digits, '_', '-' and '.' only", file=path, row=row, field="id")
            if "text" in obj:
                if any(k in obj for k in _CHAT_FIELDS):
                    raise InputError("a frame has 'text' or 'user'+'assistant', not both", file=path, row=row,
                                     field="text")
                fields = ("text",)
            else:
                fields = _CHAT_FIELDS
            for field in fields:
                if not isinstance(obj.get(field), str) or not obj[field].strip():
                    raise InputError("missing or empty", file=path, row=row, field=field)
            fmt = "text" if fields == ("text",) else "chat"
            frames.append(_make_frame(frame_id, fmt, {f: obj[f].strip() for f in fields}, file=path, row=row))
    else:
        for row, line in enumerate(read_text(path).splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = _FRAME_LINE.match(line)
            frame_id, text = (match.group(1), match.group(2).strip()) if match else (f"row{row}", line)
            frames.append(_make_frame(frame_id, "text", {"text": text}, file=path, row=row))
    if not frames:
        raise InputError("no frames in the file", file=path)
    seen: dict[tuple[str, str], int] = {}
    for frame in frames:
        key = (frame.format, frame.id)
        if key in seen:
            raise InputError(f"frame id '{frame.id}' already used on row {seen[key]}", file=path, row=frame.row,
                             field="id")
        seen[key] = frame.row
    return frames


def builtin_frames() -> list[Frame]:
    return read_frames(builtin_text_frames_path()) + read_frames(builtin_chat_frames_path())


# -- occupations -----------------------------------------------------------------------------------

def builtin_occupations() -> list[str]:
    """The occupation names of the ``occupations`` audit list (names only, not its sentences)."""
    return [" ".join(row["occupation"].split()) for _, row in read_csv_rows(builtin_occupations_path(),
                                                                             ["occupation"])]


def _clean_occupations(occupations: Iterable[str]) -> list[str]:
    out: list[str] = []
    slugs: set[str] = set()
    for index, raw in enumerate(occupations, start=1):
        if not isinstance(raw, str) or not raw.strip():
            raise InputError("empty occupation", row=index, field="occupation")
        name = " ".join(raw.split())
        if "{" in name or "}" in name:
            raise InputError(f"'{name}' contains a brace", row=index, field="occupation")
        if re.match(r"(?i)^(a|an|the)\s", name):
            raise InputError(f"'{name}' starts with an article; give the bare occupation", row=index,
                             field="occupation")
        if not _slug(name):
            raise InputError(f"'{name}' has no letters or digits", row=index, field="occupation")
        if _slug(name) not in slugs:  # "air-traffic controller" is "air traffic controller" again
            slugs.add(_slug(name))
            out.append(name)
    if not out:
        raise InputError("no occupations given", field="occupation")
    return out


# -- filling ---------------------------------------------------------------------------------------

def _capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]


class _Filler:
    """Fills the parts of one frame, in order, for one occupation and one value."""

    def __init__(self, occupation: str, value: AxisValue):
        self.occupation, self.value = occupation, value
        self.term_used = value.term is None

    def fill(self, text: str) -> str:
        out: list[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            out.append(text[position:match.start()])
            position = match.end()
            name = match.group(1)
            starts_sentence = bool(_SENTENCE_START.search("".join(out)))
            capital = starts_sentence or name[:1].isupper()
            if "|" in name:
                singular, plural = (f.strip() for f in name.split("|"))
                word = singular if self.value.number == "singular" else plural
            elif name.lower() == "a":
                out.append("\x00A\x00" if capital else "\x00a\x00")  # resolved once the next word is known
                continue
            elif name.lower() == "occupation":
                word = self.occupation
                if not self.term_used:
                    word, self.term_used = f"{self.value.term} {word}", True
            else:
                word = self.value.pronouns[name.lower()]
            out.append(_capitalise(word) if capital else word)
        out.append(text[position:])
        filled = _ARTICLE.sub(self._article, "".join(out))
        return filled.replace("\x00A\x00", "A").replace("\x00a\x00", "a")  # an article with no word after it

    @staticmethod
    def _article(match: re.Match) -> str:
        article = indefinite_article(match.group(4))
        if match.group(1) == "A":
            article = _capitalise(article)
        return f"{article}{match.group(2)}{match.group(3)}{match.group(4)}"


def fill_frame(frame: Frame, occupation: str, value: AxisValue) -> dict[str, str]:
    """The frame's parts filled for one occupation and value (the term goes on the first mention)."""
    filler = _Filler(occupation, value)
    order = ("text",) if frame.format == "text" else _CHAT_FIELDS
    return {part: filler.fill(frame.parts[part]) for part in order}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# -- the builder -----------------------------------------------------------------------------------

def build_templates(*, axis: str = DEFAULT_AXIS, values: Sequence[str] | None = None,
                    occupations: list[str] | None = None, frames_file: Path | None = None,
                    formats: Sequence[str] = FORMATS, per_occupation: int | None = None, seed: int = 0,
                    axes_file: Path | None = None) -> list[dict]:
    """Occupation x frame x value records; each frame x occupation is one ``meta.group`` holding
    every value once, so the counts per value are exactly equal.

    ``per_occupation`` keeps a seeded subset of that many frames *of each format* per occupation
    (all of them when it is ``None`` or at least the number of frames). The same arguments always
    give the same records, in the same order.
    """
    axes = load_axes(axes_file)
    if axis not in axes:
        raise InputError(f"unknown axis '{axis}' (known: {', '.join(sorted(axes))})", field="axis")
    chosen_axis = axes[axis]
    if values is None:
        chosen_values = list(chosen_axis.values.values())
    else:
        names = list(dict.fromkeys(values))
        unknown = [v for v in names if v not in chosen_axis.values]
        if unknown:
            raise InputError(f"unknown value '{unknown[0]}' of axis '{axis}' "
                             f"(known: {', '.join(chosen_axis.values)})", field="values")
        if len(names) < 2:
            raise InputError("balancing needs at least two values", field="values")
        chosen_values = [chosen_axis.values[v] for v in names]

    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"unknown format '{bad[0] if bad else ''}' (choose from {', '.join(FORMATS)})",
                         field="formats")
    if per_occupation is not None and (isinstance(per_occupation, bool) or not isinstance(per_occupation, int)
                                       or per_occupation < 1):
        raise InputError(f"per_occupation must be a positive whole number, got {per_occupation!r}",
                         field="per_occupation")

    if frames_file is not None:
        frames, source = read_frames(frames_file), f"templates:{frames_file}"
    else:
        frames, source = builtin_frames(), BUILTIN_SOURCE
    by_format = {fmt: [f for f in frames if f.format == fmt] for fmt in formats}
    if not any(by_format.values()):
        raise InputError(f"no frames of format {' or '.join(formats)}", file=frames_file)
    if not chosen_axis.by_term:
        silent = next((f for f in frames if not f.has_pronoun and f.format in formats), None)
        if silent is not None:
            raise InputError(f"frame '{silent.id}' has no pronoun placeholder, so every value of '{axis}' "
                             "would fill it the same way", file=silent.file, row=silent.row,
                             field="text" if silent.format == "text" else "user")

    names = _clean_occupations(occupations) if occupations is not None else builtin_occupations()
    records: list[dict] = []
    for occupation in names:
        for fmt in formats:
            pool = by_format[fmt]
            if per_occupation is not None and per_occupation < len(pool):
                rng = random.Random(f"{seed}:{fmt}:{occupation}")
                picked = set(rng.sample(range(len(pool)), per_occupation))
                pool = [frame for index, frame in enumerate(pool) if index in picked]
            for frame in pool:
                group = f"template:{axis}:{fmt}:{frame.id}:{_slug(occupation)}"
                for value in chosen_values:
                    records.append(_record(frame, occupation, value, axis=axis, group=group, source=source))
    return records


def _record(frame: Frame, occupation: str, value: AxisValue, *, axis: str, group: str, source: str) -> dict:
    filled = fill_frame(frame, occupation, value)
    if frame.format == "text":
        body: dict[str, Any] = {"text": filled["text"]}
    else:
        body = {"messages": [{"role": "user", "content": filled["user"]},
                             {"role": "assistant", "content": filled["assistant"]}]}
    return {"id": f"{group.replace(':', '-')}-{_slug(value.name)}", **body,
            "meta": {"source": source, "kind": "template", "attributes": {axis: value.name}, "group": group,
                     "frame": frame.id, "occupation": occupation}}


def balance_counts(records: Iterable[dict]) -> dict[str, dict[str, int]]:
    """Records per attribute value, by axis: ``{"gender": {"female": n, "male": n, "neutral": n}}``."""
    return attribute_counts(records)
