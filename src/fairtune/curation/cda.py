"""Counterfactual data augmentation (CDA): rewrite text with its demographic terms swapped.

The word lists are ours (``data/wordlists/<axis>.tsv``; the format is described at the top of
``gender.tsv``). Matching is token-based, so "man" never touches "manager" nor "Germany"
"germane", and nothing inside a URL, an e-mail address, inline code or a fenced code block is
changed. The replacement takes the case of the word it replaces, and "a"/"an" before it follows.

Gender pronouns need context, decided by a deterministic rule (a caller may pass a ``resolver``
to decide instead, e.g. by scoring both variants with a model):

* "her" is possessive ("his") when a noun phrase follows: an adjective or noun, possibly after
  modifiers ("her very old car", "her lovely dress"), a number, or "own". It is the object
  ("him") before the end of the text, punctuation, or a closed-class word (determiner,
  preposition, conjunction, pronoun, auxiliary, "not", time/place adverbs: "gave her the book",
  "for her.", "told her that"). Also "him": after "let"; before a bare verb from a short list
  ("made her feel"); after a verb that takes two objects (give, tell, buy...) when a plural noun,
  number or quantifier follows ("gave her flowers", "gave her two books").
* "his" is "her" before a noun phrase and "hers" when it stands alone ("the book is his.").
* neutral mode: she/he -> they (with verb agreement: is -> are, was -> were, has -> have,
  does -> do, "she's" -> "they're" ("they've" before been/got), a third-person -s verb directly
  after, or after one adverb, loses its -s: "she often runs" -> "they often run"; "is she" ->
  "are they" in questions); her/him -> them/their by the rule above; hers/his -> theirs;
  herself/himself -> themself; "he or she", "his/her", "s/he" collapse to one "they"/"their".
* pairs ("his/her", "him or her", "her and his") swap as a pair: "her/his", "her or him".

``resolver(text, start, end, options)`` is called for each her/his decision with the rule's
choice first in ``options`` and must return one of them.

Known limits of the rule: a content word after "her" that starts a new clause ("I told her
Mary left" -> "his"), "her" before a gerund or a quoted/emphasised word, "called her back"
only for a few verbs, past-tense and modal verbs need no agreement but irregular present forms
outside the list are not handled, and a noun that is also an adjective ("a Christian") is told
apart by the next word only.

Multi-valued axes (race, religion, nationality, age): a text may mention several values. Each
counterfactual maps every value present to a different other value (never itself, no two to
the same value); :func:`augment_records` draws up to ``max_counterfactuals`` distinct such
mappings with ``random.Random(f"{seed}|{group}|{axis}")``, so a record's draws do not depend on
its position, and records it as ``meta.cda.mapping``. :func:`swap_text` maps every other value
to ``target``, or, without a target, each value to the next one in the word list's order.
"""

from __future__ import annotations

import copy
import random
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from fairtune.curation.records import ROLES, Record, meta, record_format, record_key
from fairtune.errors import FairtuneError

AXES: tuple[str, ...] = ("gender", "race", "religion", "nationality", "age")
MODES: tuple[str, ...] = ("two-sided", "one-sided", "neutral")
FIELDS: tuple[str, ...] = ("prompt", "completion", "text")

# resolver(text, start, end, options) -> one of options; options[0] is the rule's choice.
Resolver = Callable[[str, int, int, tuple[str, str]], str]


class CDAError(FairtuneError, ValueError):
    """A bad axis, mode, target or option for counterfactual augmentation."""


# --- word lists --------------------------------------------------------------------------------

KINDS = ("noun", "word", "adj", "person", "name", "title")


@dataclass(frozen=True, eq=False)
class _Row:
    kind: str
    forms: dict[str, tuple[str, ...]]      # value -> forms; the first one is written
    plurals: dict[str, tuple[str, ...]]    # derived for "noun" rows
    neutral: str | None
    neutral_plural: str | None


@dataclass(frozen=True, eq=False)
class _Entry:
    value: str
    row: _Row
    plural: bool

    @property
    def kind(self) -> str:
        return self.row.kind

    def written(self, value: str) -> str | None:
        forms = (self.row.plurals if self.plural else self.row.forms).get(value) or ()
        return forms[0] if forms else None

    def neutral(self) -> str | None:
        return self.row.neutral_plural if self.plural else self.row.neutral


@dataclass
class _Lexicon:
    axis: str
    values: tuple[str, ...]
    index: dict[str, list[_Entry]] = field(default_factory=dict)
    max_tokens: int = 1
    keep: re.Pattern | None = None


def _norm(phrase: str) -> str:
    return re.sub(r"\s+", " ", phrase.replace("’", "'")).strip().lower()


_IRREGULAR_PLURAL = (("woman", "women"), ("man", "men"), ("person", "people"), ("child", "children"),
                     ("wife", "wives"))


def plural(word: str) -> str:
    """English plural of a list entry (the last word of a phrase). The irregular endings apply
    to lower-case nouns only, so "German" becomes "Germans", "chairman" "chairmen"."""
    if " " in word:
        head, last = word.rsplit(" ", 1)
        return f"{head} {plural(last)}"
    lower = word.lower()
    if word == lower:
        for singular, many in _IRREGULAR_PLURAL:
            if lower.endswith(singular):
                return word[: len(word) - len(singular)] + many
    if lower.endswith("arch") or lower.endswith("o") and lower != "hero":
        return word + "s"
    if lower.endswith(("s", "x", "z", "ch", "sh", "hero")):
        return word + "es"
    if lower.endswith("y") and lower[-2:-1] not in tuple("aeiou"):
        return word[:-1] + "ies"
    return word + "s"


def wordlist_path(axis: str):
    """The word list file of an axis (a Traversable inside the installed package)."""
    _check_axis(axis)
    return resources.files("fairtune.curation") / "data" / "wordlists" / f"{axis}.tsv"


@lru_cache(maxsize=None)
def _lexicon(axis: str) -> _Lexicon:
    path = wordlist_path(axis)
    header: list[str] | None = None
    lexicon: _Lexicon | None = None
    keep: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in line.split("\t")]

        def fail(message: str) -> CDAError:
            return CDAError(f"word list {axis}.tsv line {number}: {message}")

        if header is None:
            header = cells
            if header[0] != "kind" or len(header) < 3:
                raise fail("the first line must name the columns: kind, then the values")
            values = tuple(c for c in header[1:] if c != "neutral")
            lexicon = _Lexicon(axis, values)
            continue
        assert lexicon is not None
        kind = cells[0]
        if kind == "keep":
            keep.append(cells[1])
            continue
        if kind not in KINDS:
            raise fail(f"unknown kind {kind!r}; expected keep or one of {', '.join(KINDS)}")
        if len(cells) > len(header):
            raise fail(f"{len(cells)} cells, the header names {len(header)}")
        cells += [""] * (len(header) - len(cells))
        row_cells = dict(zip(header[1:], cells[1:]))
        forms = {v: tuple(f.strip() for f in row_cells[v].split("|") if f.strip()) for v in lexicon.values}
        neutral = row_cells.get("neutral") or None
        derive = kind == "noun"
        row = _Row(kind, forms, {v: tuple(plural(f) for f in fs) for v, fs in forms.items()} if derive else {},
                   neutral, plural(neutral) if derive and neutral else None)
        for value, value_forms in forms.items():
            for is_plural, group in ((False, value_forms), (True, row.plurals.get(value, ()))):
                for form in group:
                    _add_entry(lexicon, _norm(form), _Entry(value, row, is_plural), fail)
    if lexicon is None:
        raise CDAError(f"word list {axis}.tsv has no header line")
    if keep:
        patterns = [re.escape(p).replace(r"\ ", r"\s+").replace("'", "['’]") for p in keep]
        lexicon.keep = re.compile(r"(?<![\w'’-])(?:" + "|".join(patterns) + r")(?![\w'’-])", re.IGNORECASE)
    return lexicon


def _add_entry(lexicon: _Lexicon, key: str, entry: _Entry, fail) -> None:
    entries = lexicon.index.setdefault(key, [])
    for other in entries:
        if other.kind == entry.kind:
            if other.value != entry.value:
                raise fail(f"{key!r} is listed for both {other.value} and {entry.value}")
            return  # the same form again (a shared cell): the first row wins
    entries.append(entry)
    lexicon.max_tokens = max(lexicon.max_tokens, len(_WORD.findall(key)))


def axis_values(axis: str) -> tuple[str, ...]:
    """The values of an axis, in word-list order (gender: female, male)."""
    return _lexicon(axis).values


# --- closed-class words for the context rules --------------------------------------------------

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# After "her" these mean "her" is the object: determiners, prepositions, conjunctions, pronouns,
# auxiliaries and adverbs that follow an object. Also what makes "his" stand alone.
CLOSED = _words("""
    a an the this that these those my your his her its our their some any no both either neither
    another such what which whose to for with at in on of from by about into onto over under up down
    out off away through throughout after before around across along as than like near behind
    beside besides between among against toward towards upon within without during since until
    till via per despite and or but nor because if when while whether although though yet unless
    where whereas once i me you he him she it we us they them myself yourself himself herself
    itself ourselves yourselves themselves themself who whom whoever what whatever something
    anything everything nothing someone anyone everyone nobody somebody anybody everybody is are
    was were be been being am will would shall should can could may might must do does did has
    have had not here there now then today tonight tomorrow yesterday again already also anyway
    ever alone enough well instead later soon together anymore why how whenever wherever please
    still right""")
# Looked through to the word after: "her very old car" (his) vs "love her very much" (him).
QUANTIFIERS = _words("many much more most few fewer several every all less least")
MODIFIERS = QUANTIFIERS | _words("""
    very really quite rather so too extremely pretty fairly almost nearly just truly incredibly
    somewhat even only always never often sometimes usually""")
# -ly words that are nouns, not adverbs ("her family." is possessive).
LY_NOUNS = _words("""family ally belly bully lily jelly rally folly assembly anomaly monopoly
    supply reply july fly butterfly dragonfly firefly homily holly gully tally""")
NUMBER_WORDS = _words("""one two three four five six seven eight nine ten eleven twelve twenty
    thirty forty fifty hundred thousand million dozen""")
# Bare verbs that are rarely nouns: "made her feel", "help her understand".
BARE_VERBS = _words("""go know be do come stay see feel think understand decide choose sit wait
    eat become get keep find tell want speak learn hear believe explain realize realise remember
    forget grow continue join give put make try""")
LET = _words("let lets letting")
# Verbs that take two objects: after them "her" + plural/number/quantifier is the object.
DITRANSITIVE = _words("""give gives gave given giving send sends sent sending tell tells told
    telling show shows showed shown showing offer offers offered hand hands handed bring brings
    brought buy buys bought teach teaches taught ask asks asked owe owes owed lend lends lent
    promise promised wish wished pass passed sell sold award awarded grant granted deny denied
    fetch fetched throw threw""")
# "drove her home", "called her back": the object, not "her home".
PARTICLE_VERBS = _words("""drive drove driven walk walked take took taken bring brought send sent
    call called want wanted welcome welcomed get got pay paid win won hold held invite invited
    carry carried""")
ARTICLES = _words("a an the")
LINKING = _words("""is are was were be been being am become became becomes seem seems seemed
    remain remains remained not very deeply devoutly proudly also""")
POSSESSIVE_DETERMINERS = _words("my your his her its our their")
# Agreement in neutral mode.
AUX_PLURAL = {"is": "are", "was": "were", "has": "have", "does": "do", "isn't": "aren't",
              "wasn't": "weren't", "hasn't": "haven't", "doesn't": "don't"}
AGREE_SKIP = _words("""always never often usually sometimes also still just really only rarely
    seldom even already generally typically certainly probably clearly actually frequently
    normally constantly finally suddenly herself himself""")
NOT_VERBS = _words("""always sometimes perhaps thus nevertheless nonetheless besides afterwards
    nowadays as us yes plus unless towards this his its hers less across regardless whereas
    likewise""")
# Nouns for people: race and age adjectives are swapped only before one of these.
PERSON_NOUNS = _words("""person people man men woman women boy boys girl girls child children kid
    kids adult adults family families community communities individual individuals student
    students worker workers employee employees patient patients voter voters resident residents
    neighbor neighbors neighbour neighbours couple couples parent parents mother mothers father
    fathers son sons daughter daughters teen teens teenager teenagers lady ladies gentleman
    gentlemen guy guys folks applicant applicants candidate candidates customer customers driver
    drivers author authors writer writers doctor doctors nurse nurses teacher teachers engineer
    engineers lawyer lawyers officer officers citizen citizens immigrant immigrants youth youths
    professional professionals athlete athletes player players artist artists scientist
    scientists character characters victim victims suspect suspects defendant defendants client
    clients tenant tenants leader leaders colleague colleagues coworker coworkers manager
    managers americans american population populations owner owners entrepreneur entrepreneurs
    actor actors actress actresses politician politicians musician musicians singer singers
    wife husband wives husbands sister sisters brother brothers friend friends""")

_PRONOUN_VALUE = {"she": "female", "her": "female", "hers": "female", "herself": "female",
                  "he": "male", "him": "male", "his": "male", "himself": "male"}
_SWAP_PRONOUN = {"she": "he", "he": "she", "hers": "his", "herself": "himself", "himself": "herself",
                 "him": "her"}
_NEUTRAL_PRONOUN = {"she": "they", "he": "they", "him": "them", "hers": "theirs", "herself": "themself",
                    "himself": "themself"}
_PAIR_SWAP = {"they": {"he": "she", "she": "he"}, "them": {"him": "her", "her": "him"},
              "their": {"his": "her", "her": "his"}, "theirs": {"his": "hers", "hers": "his"},
              "themself": {"himself": "herself", "herself": "himself"}}
_PAIR = {("he", "she"): "they", ("she", "he"): "they", ("him", "her"): "them", ("her", "him"): "them",
         ("his", "her"): "their", ("her", "his"): "their", ("his", "hers"): "theirs",
         ("hers", "his"): "theirs", ("himself", "herself"): "themself", ("herself", "himself"): "themself"}


# --- the text and its context ------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+")
_COMPOUND = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_NUMBER = re.compile(r"\d[\d,.]*")
_PROTECT = [
    re.compile(r"(```|~~~).*?(?:\1|\Z)", re.DOTALL),                           # fenced code
    re.compile(r"`[^`\n]+`"),                                                   # inline code
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s<>\"'`]+", re.IGNORECASE),           # URL with a scheme
    re.compile(r"\bwww\.[^\s<>\"'`]+", re.IGNORECASE),
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),                                # e-mail address
    re.compile(r"\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|edu|gov|io|dev|ai|co|uk|de)\b(?:/\S*)?",
               re.IGNORECASE),                                                  # bare domain
]


@dataclass
class _Next:
    kind: str    # end, punct, number, closed, content, opaque (code, URL)
    word: str    # lower case, apostrophes normalised
    start: int
    end: int
    raw: str = ""


class _Doc:
    def __init__(self, text: str, keep: re.Pattern | None):
        self.text = text
        spans = [m.span() for pattern in _PROTECT for m in pattern.finditer(text)]
        if keep is not None:
            spans += [m.span() for m in keep.finditer(text)]
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.spans = merged
        self._starts = [s for s, _ in merged]
        self.tokens = [m.span() for m in _WORD.finditer(text) if self.protected(m.start()) is None]

    def protected(self, pos: int) -> list[int] | None:
        i = bisect_right(self._starts, pos) - 1
        return self.spans[i] if i >= 0 and pos < self.spans[i][1] else None

    def next(self, pos: int) -> _Next:
        text, n = self.text, len(self.text)
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return _Next("end", "", n, n)
        span = self.protected(pos)
        if span is not None:
            return _Next("opaque", "", span[0], span[1])
        if m := _COMPOUND.match(text, pos):
            raw = m.group()
            word = raw.lower().replace("’", "'")
            return _Next(_classify(word), word, m.start(), m.end(), raw)
        if m := _NUMBER.match(text, pos):
            return _Next("number", m.group(), m.start(), m.end(), m.group())
        return _Next("punct", text[pos], pos, pos + 1, text[pos])

    def prev_word(self, start: int) -> str:
        m = re.search(r"([^\W\d_]+(?:['’][^\W\d_]+)?)\s+$", self.text[max(0, start - 40):start])
        return m.group(1).lower().replace("’", "'") if m else ""

    def following(self, pos: int) -> tuple[_Next, str | None]:
        """The next word that is not a modifier, and the first modifier skipped (if any)."""
        first = None
        for _ in range(5):
            nxt = self.next(pos)
            if nxt.kind != "modifier":
                return nxt, first
            first = first or nxt.word
            pos = nxt.end
        return nxt, first


def _classify(word: str) -> str:
    head = re.split(r"'", word)[0]
    if word in CLOSED or head in CLOSED:
        return "closed"
    if word in NUMBER_WORDS:
        return "number"
    if word in MODIFIERS or (word.endswith("ly") and word not in LY_NOUNS):
        return "modifier"
    return "content"


def _case_like(source: str, target: str) -> str:
    letters = [c for c in source if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return target.upper()
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


def _article(word: str) -> str:
    lower = word.lower()
    if lower.startswith(("hour", "honest", "honor", "honour", "heir")):
        return "an"
    if lower.startswith(("uni", "use", "usu", "ure", "eu", "one", "once", "ewe")):
        return "a"
    return "an" if lower[:1] in "aeiou" else "a"


def _plural_like(word: str) -> bool:
    return len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is", "'s"))


# --- the rules for her / his -------------------------------------------------------------------

def _her_is_possessive(doc: _Doc, start: int, end: int) -> bool:
    prev = doc.prev_word(start)
    if prev in LET:
        return False
    nxt, modifier = doc.following(end)
    if nxt.kind in ("end", "punct"):
        return False
    if nxt.kind == "closed":
        # "her and his books": coordinated determiners.
        return modifier is None and nxt.word in ("and", "or") and doc.next(nxt.end).word == "his"
    if nxt.kind == "number":
        return prev not in DITRANSITIVE
    if nxt.kind == "opaque":
        return True
    if modifier is None:
        if nxt.word == "own":
            return True
        if nxt.word in BARE_VERBS:
            return False
        if nxt.word in ("back", "home") and prev in PARTICLE_VERBS:
            return False
    if prev in DITRANSITIVE and (modifier in QUANTIFIERS or _plural_like(nxt.word)):
        return False
    return True


def _his_is_determiner(doc: _Doc, end: int) -> bool:
    nxt, modifier = doc.following(end)
    if nxt.kind in ("end", "punct"):
        return False
    if nxt.kind == "closed":
        return modifier is None and nxt.word in ("and", "or") and doc.next(nxt.end).word == "her"
    return True


def _third_person_base(verb: str) -> str | None:
    """"runs" -> "run", "tries" -> "try", "watches" -> "watch"; None if not a -s verb."""
    lower = verb.lower()
    if lower in NOT_VERBS or len(lower) < 3 or not lower.endswith("s") or lower.endswith(("ss", "us", "is")):
        return None
    if lower in ("goes", "focuses"):
        return verb[:-2]
    if lower.endswith("ies") and len(lower) > 4:
        return verb[:-3] + ("Y" if verb[-1].isupper() else "y")
    if lower.endswith(("sses", "shes", "ches", "xes", "zzes", "oes")):
        return verb[:-2]
    return verb[:-1]


# --- the rewriter ------------------------------------------------------------------------------

@dataclass
class _Plan:
    mapping: dict[str, str]          # source value -> target value (empty in neutral mode)
    neutral: bool = False
    resolver: Resolver | None = None


class _Rewrite:
    """One pass over one text for one axis: counts the terms by value and (with a plan) collects
    the edits. Context is always read from the original text."""

    def __init__(self, text: str, lexicon: _Lexicon, plan: _Plan | None):
        self.text, self.lexicon, self.plan = text, lexicon, plan
        self.doc = _Doc(text, lexicon.keep)
        self.counts: Counter[str] = Counter()
        self.swaps = 0
        self._edits: list[tuple[int, int, str]] = []

    def run(self) -> _Rewrite:
        tokens, i = self.doc.tokens, 0
        while i < len(tokens):
            i += self._at(i)
        return self

    def result(self) -> str:
        out, last = [], 0
        for start, end, replacement in sorted(self._edits):
            out += [self.text[last:start], replacement]
            last = end
        return "".join(out) + self.text[last:]

    def _edit(self, start: int, end: int, replacement: str) -> bool:
        if self.text[start:end] == replacement:
            return False
        if any(start < e and s < end for s, e, _ in self._edits):
            return False  # first edit wins (agreement before a later term)
        self._edits.append((start, end, replacement))
        return True

    def _at(self, i: int) -> int:
        tokens, text, lexicon = self.doc.tokens, self.text, self.lexicon
        for k in range(min(lexicon.max_tokens, len(tokens) - i), 0, -1):
            start, end = tokens[i][0], tokens[i + k - 1][1]
            entries = lexicon.index.get(_norm(text[start:end]))
            if entries:
                entry = self._choose(entries, start, end)
                if entry is not None:
                    self._term(entry, start, end)
                    return k
        word = text[tokens[i][0]:tokens[i][1]].lower()
        if lexicon.axis == "gender" and (word in _PRONOUN_VALUE or word == "s"):
            return self._pronoun(i, word)
        return 1

    def _choose(self, entries: list[_Entry], start: int, end: int) -> _Entry | None:
        text = self.text
        by_kind = {e.kind: e for e in entries}
        last_word = _WORD.findall(text[start:end])[-1]
        if (e := by_kind.get("title")) and text[start].isupper():
            name = re.match(r"\.?[ \t]+([^\W\d_])", text[end:])   # "Mr. Smith", "Ms Patel"
            if name and name.group(1).isupper():
                return e
        if (e := by_kind.get("name")) and last_word[0].isupper():
            return e
        if (e := by_kind.get("person")) and text[start - 1:start] != "-" and self._before_person(end):
            return e
        adj, noun = by_kind.get("adj"), by_kind.get("noun")
        if adj and noun:
            return noun if self._nominal(start, end) else adj
        return adj or noun or by_kind.get("word")

    def _before_person(self, end: int) -> bool:
        pos = end
        for _ in range(3):
            nxt = self.doc.next(pos)
            if nxt.kind not in ("content", "modifier"):
                return False
            if nxt.word.split("'")[0] in PERSON_NOUNS or nxt.word in PERSON_NOUNS:
                return True
            pos = nxt.end
        return False

    def _nominal(self, start: int, end: int) -> bool:
        """Is an adjective-or-noun word ("Christian") used as a noun here?"""
        if self.doc.prev_word(start) in LINKING:
            return False
        nxt = self.doc.next(end)
        if nxt.kind in ("end", "punct"):
            return True
        if nxt.kind == "closed":
            if nxt.word in ("and", "or", "nor"):
                return self.doc.next(nxt.end).word in ARTICLES
            return True
        return False

    def _term(self, entry: _Entry, start: int, end: int) -> None:
        self.counts[entry.value] += 1
        plan = self.plan
        if plan is None:
            return
        if plan.neutral:
            target = entry.neutral()
        else:
            value = plan.mapping.get(entry.value)
            target = entry.written(value) if value else None
        if not target:
            return
        source = self.text[start:end]
        replacement = _case_like(source, target)
        if self._edit(start, end, replacement):
            self.swaps += 1
            self._fix_article(start, source, replacement)

    def _fix_article(self, start: int, source: str, replacement: str) -> None:
        m = re.search(r"(?<![\w'’-])(an?)(\s+)$", self.text[max(0, start - 12):start], re.IGNORECASE)
        if not m:
            return
        article = m.group(1)
        if article.lower() != _article(source) or _article(replacement) == article.lower():
            return  # leave articles that did not agree before alone
        new = _article(replacement)
        new = new.upper() if article.isupper() and len(article) > 1 else _case_like(article, new)
        a_start = start - len(m.group(0))
        self._edit(a_start, a_start + len(article), new)

    # pronouns (gender only)

    def _pronoun(self, i: int, word: str) -> int:
        tokens, text, plan = self.doc.tokens, self.text, self.plan
        start, end = tokens[i]
        if word == "s":
            return self._s_he(i)
        pair = self._pair(i, word)
        if plan is not None and pair is not None:
            j, neutral = pair
            other = text[tokens[j][0]:tokens[j][1]].lower()
            self.counts.update((_PRONOUN_VALUE[word], _PRONOUN_VALUE[other]))
            if plan.neutral:
                if self._edit(start, tokens[j][1], _case_like(text[start:end], neutral)):
                    self.swaps += 1
                    if neutral == "they":
                        self._agree(start, tokens[j][1])
                return j - i + 1
            # "his/her", "him or her": the pair says which slot both words fill.
            for k, w in ((i, word), (j, other)):
                if plan.mapping.get(_PRONOUN_VALUE[w]) is not None:
                    s_k, e_k = tokens[k]
                    if self._edit(s_k, e_k, _case_like(text[s_k:e_k], _PAIR_SWAP[neutral][w])):
                        self.swaps += 1
            return j - i + 1
        self.counts[_PRONOUN_VALUE[word]] += 1
        if plan is None:
            return 1
        source = text[start:end]
        if plan.neutral:
            if word == "her":
                target = self._decide(start, end, _her_is_possessive(self.doc, start, end), "their", "them")
            elif word == "his":
                target = self._decide(start, end, _his_is_determiner(self.doc, end), "their", "theirs")
            else:
                target = _NEUTRAL_PRONOUN[word]
            if word in ("she", "he") and (m := re.match(r"(['’])([sS])(?![\w'’])", text[end:])):
                # "she's" -> "they're", or "they've" before been/got.
                after = self.doc.next(end + 2).word
                verb = "ve" if after in ("been", "got", "gotten") else "re"
                verb = verb.upper() if m.group(2) == "S" else verb
                if self._edit(start, end + 2, _case_like(source, "they") + m.group(1) + verb):
                    self.swaps += 1
                return 1
            if self._edit(start, end, _case_like(source, target)):
                self.swaps += 1
                if word in ("she", "he"):
                    self._agree(start, end)
            return 1
        if plan.mapping.get(_PRONOUN_VALUE[word]) is None:
            return 1
        if word == "her":
            target = self._decide(start, end, _her_is_possessive(self.doc, start, end), "his", "him")
        elif word == "his":
            target = self._decide(start, end, _his_is_determiner(self.doc, end), "her", "hers")
        else:
            target = _SWAP_PRONOUN[word]
        if self._edit(start, end, _case_like(source, target)):
            self.swaps += 1
        return 1

    def _s_he(self, i: int) -> int:
        """"s/he" names both: unchanged by a swap, "they" in neutral mode."""
        start, end = self.doc.tokens[i]
        if not (re.match(r"/he\b", self.text[end:], re.IGNORECASE) and self.text[start - 1:start] in ("", " ", "\n")):
            return 1
        self.counts.update(("female", "male"))
        if self.plan is not None and self.plan.neutral:
            if self._edit(start, end + 3, _case_like(self.text[start:end + 3], "they")):
                self.swaps += 1
                self._agree(start, end + 3)
        return 2

    def _decide(self, start: int, end: int, first: bool, yes: str, no: str) -> str:
        options = (yes, no) if first else (no, yes)
        resolver = self.plan.resolver if self.plan else None
        if resolver is None:
            return options[0]
        choice = resolver(self.text, start, end, options)
        if choice not in options:
            raise CDAError(f"resolver returned {choice!r}; expected one of {', '.join(options)}")
        return choice

    def _pair(self, i: int, word: str) -> tuple[int, str] | None:
        """ "he or she", "his/her", "him and her": the index of the second pronoun and the
        single neutral form that replaces both."""
        tokens, text = self.doc.tokens, self.text
        for j in (i + 1, i + 2):
            if j >= len(tokens):
                return None
            other = text[tokens[j][0]:tokens[j][1]].lower()
            gap = text[tokens[i][1]:tokens[j][0]]
            if (word, other) in _PAIR and re.fullmatch(r"\s*/\s*|\s+(?:or|and)\s+", gap, re.IGNORECASE):
                return j, _PAIR[(word, other)]
        return None

    def _agree(self, start: int, end: int) -> None:
        """Verb agreement after a new "they" (and before it, in a question)."""
        doc, text = self.doc, self.text
        prev = re.search(r"([^\W\d_]+(?:['’][^\W\d_]+)?)(\s+)$", text[max(0, start - 20):start])
        if prev and prev.group(1).lower().replace("’", "'") in AUX_PLURAL:
            stop = re.search(r"[.?!]", text[end:])
            if stop and stop.group() == "?":
                p_start = start - len(prev.group(0))
                self._verb_edit(p_start, p_start + len(prev.group(1)), prev.group(1))
                return
        nxt = doc.next(end)
        if nxt.word in AGREE_SKIP or (nxt.kind == "modifier" and nxt.word.endswith("ly")):
            nxt = doc.next(nxt.end)  # one adverb between: "she often runs"
        if nxt.word in AUX_PLURAL:
            self._verb_edit(nxt.start, nxt.end, nxt.raw)
        elif nxt.kind == "content" and not re.search(r"['-]", nxt.word):
            if (base := _third_person_base(nxt.raw)) is not None:
                self._edit(nxt.start, nxt.end, base)

    def _verb_edit(self, start: int, end: int, raw: str) -> None:
        apostrophe = "’" if "’" in raw else "'"
        plural_form = AUX_PLURAL[raw.lower().replace("’", "'")].replace("'", apostrophe)
        self._edit(start, end, _case_like(raw, plural_form))


# --- public API --------------------------------------------------------------------------------

def _check_axis(axis: str) -> str:
    if axis not in AXES:
        raise CDAError(f"unknown CDA axis {axis!r}; choose from {', '.join(AXES)}")
    return axis


def _check_mode(mode: str, axis: str) -> str:
    if mode not in MODES:
        raise CDAError(f"unknown CDA mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "neutral" and axis != "gender":
        raise CDAError(f"the neutral mode works on the gender axis only, not {axis!r}")
    return mode


def _swap_mapping(axis: str, target: str | None) -> dict[str, str]:
    values = axis_values(axis)
    if target is None:
        if axis == "gender":
            return {"female": "male", "male": "female"}
        return {v: values[(i + 1) % len(values)] for i, v in enumerate(values)}
    if target not in values:
        raise CDAError(f"unknown {axis} target {target!r}; choose from {', '.join(values)}")
    return {v: target for v in values if v != target}


def _apply(text: str, axis: str, plan: _Plan | None) -> _Rewrite:
    return _Rewrite(text, _lexicon(axis), plan).run()


def swap_text(text: str, *, axis: str = "gender", mode: str = "one-sided", target: str | None = None,
              resolver: Resolver | None = None) -> str:
    """The counterfactual of one text. ``mode`` "one-sided" and "two-sided" give the same
    single text here (two-sided only matters for records); "neutral" (gender only) writes the
    neutral forms. ``target``: for gender "female" or "male" swaps one direction only (None
    swaps both ways); for the other axes every other value goes to ``target`` (None: each value
    to the next one in the word list)."""
    _check_mode(mode, _check_axis(axis))
    if mode == "neutral":
        if target not in (None, "neutral"):
            raise CDAError(f"the neutral mode takes no target (got {target!r})")
        plan = _Plan({}, neutral=True, resolver=resolver)
    else:
        plan = _Plan(_swap_mapping(axis, target), resolver=resolver)
    return _apply(text, axis, plan).result()


def term_counts(texts: Iterable[str], axes: Iterable[str] = AXES) -> dict[str, dict[str, int]]:
    """Demographic terms in the texts per axis and value: ``{"gender": {"female": 3, "male": 5},
    ...}``; every value is listed, zeros included. Usable as the data card's ``term_counter``."""
    axes = tuple(_check_axis(a) for a in axes)
    totals = {axis: Counter() for axis in axes}
    for text in texts:
        for axis in axes:
            totals[axis].update(_apply(text, axis, None).counts)
    return {axis: {v: totals[axis][v] for v in axis_values(axis)} for axis in axes}


def _selected(record: Record, roles: tuple[str, ...], fields: tuple[str, ...]) -> list[tuple[Any, str]]:
    """(container, key) of every text the augmentation may change."""
    body = record_format(record)
    if body == "messages":
        return [(m, "content") for m in record["messages"] if m.get("role") in roles]
    names = ("prompt", "completion") if body == "prompt" else ("text",)
    return [(record, name) for name in names if name in fields and isinstance(record.get(name), str)]


def _dominant(counts: Counter) -> str | None:
    ranked = counts.most_common()
    if not ranked or ranked[0][1] == 0:
        return None
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return "mixed"
    return ranked[0][0]


def _draw_mappings(present: list[str], values: tuple[str, ...], k: int, rng: random.Random) -> list[dict[str, str]]:
    """Up to ``k`` distinct mappings of the present values, each to a different other value."""
    if len(present) == 1:
        others = [v for v in values if v != present[0]]
        return [{present[0]: t} for t in rng.sample(others, min(k, len(others)))]
    found: list[dict[str, str]] = []
    for _ in range(50 * min(k, 100)):
        if len(found) == k:
            break
        targets = rng.sample(values, len(present))
        mapping = dict(zip(present, targets))
        if all(mapping[p] != p for p in present) and mapping not in found:
            found.append(mapping)
    return found


def augment_records(records: list[dict], *, axes: Iterable[str] = ("gender",), mode: str = "two-sided",
                    roles: Iterable[str] = ("user", "assistant"), fields: Iterable[str] = FIELDS,
                    seed: int = 0, max_counterfactuals: int = 1,
                    resolver: Resolver | None = None) -> list[dict]:
    """Counterfactual records for every record that has something to swap.

    Only the chosen ``roles`` of ``messages`` records and the chosen ``fields`` (prompt,
    completion, text) change. Each axis is swapped on its own, starting from the original. A
    record with nothing to swap passes through (``meta.kind`` "original" when it had no kind).
    Otherwise two-sided keeps the original (kind "original") and adds the counterfactuals
    (kind "counterfactual"); one-sided and neutral give the counterfactuals only. Both carry
    ``meta.group`` (kept from the original, else its id, else its content key) and
    ``meta.attributes[axis]`` (the value after swapping); ``meta.cda`` says what was done.
    Counterfactual ids are the original's id (or content key) plus ``-cf-<axis>[-<targets>]``
    or ``-neutral``."""
    axes = tuple(_check_axis(a) for a in axes)
    for axis in axes:
        _check_mode(mode, axis)
    roles, fields = tuple(roles), tuple(fields)
    if bad := [r for r in roles if r not in ROLES]:
        raise CDAError(f"unknown role {bad[0]!r}; choose from {', '.join(ROLES)}")
    if bad := [f for f in fields if f not in FIELDS]:
        raise CDAError(f"unknown field {bad[0]!r}; choose from {', '.join(FIELDS)}")
    if not isinstance(max_counterfactuals, int) or max_counterfactuals < 1:
        raise CDAError(f"max_counterfactuals must be a whole number >= 1, got {max_counterfactuals!r}")

    out: list[dict] = []
    seen_ids = {str(r["id"]) for r in records if "id" in r}
    for record in records:
        old_meta = meta(record)
        group = str(old_meta.get("group") or record.get("id") or record_key(record))
        base_id = str(record["id"]) if "id" in record else record_key(record)
        variants: list[dict] = []
        original_attributes: dict[str, str] = {}
        for axis in axes:
            texts = [c[k] for c, k in _selected(record, roles, fields)]
            before = Counter()
            for text in texts:
                before.update(_apply(text, axis, None).counts)
            present = [v for v in axis_values(axis) if before[v]]
            if not present:
                continue
            attributes = old_meta.get("attributes") or {}
            original_value = str(attributes.get(axis) or _dominant(before))
            for plan, suffix, extra in _plans(axis, mode, present, seed, group, max_counterfactuals, resolver):
                variant = copy.deepcopy(record)
                swaps, after = 0, Counter()
                for container, key in _selected(variant, roles, fields):
                    rewrite = _apply(container[key], axis, plan)
                    container[key] = rewrite.result()
                    swaps += rewrite.swaps
                    after.update(_apply(container[key], axis, None).counts)
                if swaps == 0:
                    continue
                if plan.neutral:
                    value = "neutral"
                else:
                    value = plan.mapping.get(original_value) or _dominant(after) or "none"
                original_attributes[axis] = original_value
                cda = {"axis": axis, "mode": mode, "swaps": swaps, **extra}
                if old_meta.get("kind") not in (None, "original"):
                    cda["from_kind"] = old_meta["kind"]
                variant["id"] = _unique(f"{base_id}-{suffix}", seen_ids)
                variant["meta"] = {**copy.deepcopy(old_meta), "kind": "counterfactual", "group": group,
                                   "attributes": {**(old_meta.get("attributes") or {}), axis: value},
                                   "cda": cda}
                variant = {"id": variant.pop("id"), **variant}
                variants.append(variant)
        if not variants:
            out.append(_labelled(record, {}, None))
            continue
        if mode == "two-sided":
            out.append(_labelled(record, original_attributes, group))
        out.extend(variants)
    return out


def _plans(axis: str, mode: str, present: list[str], seed: int, group: str, k: int,
           resolver: Resolver | None):
    if mode == "neutral":
        yield _Plan({}, neutral=True, resolver=resolver), "neutral", {}
        return
    if axis == "gender":
        yield _Plan({"female": "male", "male": "female"}, resolver=resolver), "cf-gender", {}
        return
    rng = random.Random(f"{seed}|{group}|{axis}")
    for mapping in _draw_mappings(present, axis_values(axis), k, rng):
        suffix = f"cf-{axis}-" + "+".join(mapping[p] for p in present)
        yield _Plan(mapping, resolver=resolver), suffix, {"mapping": mapping, "seed": seed}


def _labelled(record: Record, attributes: dict[str, str], group: str | None) -> Record:
    new_meta = dict(meta(record))
    new_meta.setdefault("kind", "original")
    if group is not None:
        new_meta["group"] = group
    if attributes:
        new_meta["attributes"] = {**attributes, **(new_meta.get("attributes") or {})}
    return {**record, "meta": new_meta}


def _unique(candidate: str, seen: set[str]) -> str:
    name, n = candidate, 1
    while name in seen:
        n += 1
        name = f"{candidate}-{n}"
    seen.add(name)
    return name
