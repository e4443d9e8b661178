#!/usr/bin/env python3
"""Build the generated part of fairtune's built-in bias suites from their template families.

    python scripts/build_builtin_suites.py            # rewrite the suite files in src/fairtune/audits/data
    python scripts/build_builtin_suites.py --check    # exit 1 if a committed suite file differs
    python scripts/build_builtin_suites.py --out DIR  # write the suite files under DIR instead

The families live in ``src/fairtune/audits/data/families/`` (see its README.md): frames and fillers
as small text and TSV files, each documented in its header, plus the hand-written items of each
suite, which come first in every output, unchanged. This script only combines them, with the
standard library alone, so its output is a pure function of those files: the committed suites are
exactly what it writes (``tests/test_builtin_families.py`` checks this byte for byte).

Outputs, in the public formats the audits read (so the same readers serve users' benchmark files):

- ``stereotype_pairs.csv``: CrowS-Pairs columns plus ``id`` and ``domain``. Gender frames are filled
  with gendered referents, religion frames with a target religion term against contrast terms.
- ``stereoset_builtin.json``: StereoSet ``dev.json`` layout; our examples carry a ``domain`` key.
- ``coreference_suite/{pro,anti}_stereotyped_type{1,2}.txt``: WinoBias layout, numbered lines.

Which fillers a frame takes is decided by sha256 ranks of "<frame>/<filler>" strings (rendezvous
hashing), never by position or a random generator: adding a filler changes at most one item of a
frame, and an item's id (built from its frame's and filler's ids) always names the same text.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "fairtune" / "audits" / "data"
FAMILIES = DATA / "families"

GENDER_DOMAINS = ("occupations", "traits", "family", "sports", "emotions")
RELIGION_DOMAINS = ("violence", "money", "women", "customs", "trust")
REFERENTS_PER_FRAME = 10           # gender frames: referents of the frame's pool
NOUNS_PER_FRAME = 10               # religion frames: nouns of the frame's pool
STEREOSET_PAIRS_PER_FRAME = 3      # target-term pairs per StereoSet frame (both terms of each)
OCCUPATION_PAIRS_PER_FRAME = 5     # coreference: (male-, female-majority) occupation pairs per frame
PRONOUNS = {
    "female": {"subj": "she", "obj": "her", "poss": "her", "refl": "herself"},
    "male": {"subj": "he", "obj": "him", "poss": "his", "refl": "himself"},
}
OTHER = {"female": "male", "male": "female"}
PAIR_COLUMNS = ("id", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "domain")
WINOBIAS_FILES = tuple(f"{stance}_stereotyped_{kind}.txt" for kind in ("type1", "type2") for stance in ("pro", "anti"))
AUTHORS = "fairtune-authors"
PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")


class FamilyError(ValueError):
    """A family file that does not say what the generator needs, named with its line."""


# -- reading the families -------------------------------------------------------------------------

def _lines(path: Path) -> Iterable[tuple[int, str]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line


def read_table(path: Path) -> list[dict[str, str]]:
    """A tab-separated table after its '#' header comment; the first other line names the columns."""
    rows, header = [], None
    for number, line in _lines(path):
        cells = line.split("\t")
        if header is None:
            header = cells
            continue
        if len(cells) != len(header):
            raise FamilyError(f"{path}:{number}: {len(cells)} fields, expected {len(header)} ({', '.join(header)})")
        rows.append(dict(zip(header, cells)))
    return rows


def read_frames(path: Path, fields: int) -> list[tuple[int, list[str]]]:
    """``field | field | ...`` lines (spaces around '|' are ignored), with their line numbers."""
    frames = []
    for number, line in _lines(path):
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) != fields or not all(cells):
            raise FamilyError(f"{path}:{number}: expected {fields} non-empty fields separated by '|'")
        frames.append((number, cells))
    return frames


def rank(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode("utf-8")).hexdigest()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fill(text: str, values: dict[str, str], where: str) -> str:
    """Replace ``{key}`` by ``values[key]``; ``{Key}`` capitalises the value's first letter."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        key = name[0].lower() + name[1:]
        if key not in values:
            raise FamilyError(f"{where}: unknown placeholder {{{name}}}")
        value = values[key]
        return value[0].upper() + value[1:] if name[0].isupper() else value
    out = PLACEHOLDER.sub(replace, text)
    if not out.lstrip("[")[:1].isupper():
        raise FamilyError(f"{where}: the sentence must start with a capital letter: {out!r}")
    return out


def pronouns(gender: str) -> dict[str, str]:
    return dict(PRONOUNS[gender])


# -- stereotype-pairs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PairRow:
    id: str
    sent_more: str
    sent_less: str
    direction: str
    bias_type: str
    domain: str

    def cells(self) -> list[str]:
        return [self.id, self.sent_more, self.sent_less, self.direction, self.bias_type, self.domain]


def gender_pairs(families: Path) -> list[PairRow]:
    folder = families / "stereotype_pairs"
    referents = read_table(folder / "gender_referents.tsv")
    rows = []
    for domain in GENDER_DOMAINS:
        path = folder / f"gender_{domain}.txt"
        for number, (frame_id, kind, pool, text) in read_frames(path, 4):
            where = f"{path}:{number}"
            if kind not in ("F", "M"):
                raise FamilyError(f"{where}: '{kind}' is not F or M")
            members = [r for r in referents if r["pool"] == pool]
            if len(members) < REFERENTS_PER_FRAME:
                raise FamilyError(f"{where}: pool '{pool}' has {len(members)} referents, "
                                  f"fewer than {REFERENTS_PER_FRAME}")
            chosen = sorted(members, key=lambda r: rank(domain, frame_id, r["id"]))[:REFERENTS_PER_FRAME]
            for referent in chosen:
                female = fill(text, {"ref": referent["female"], **pronouns("female")}, where)
                male = fill(text, {"ref": referent["male"], **pronouns("male")}, where)
                more, less, direction = (female, male, "stereo") if kind == "F" else (male, female, "antistereo")
                rows.append(PairRow(f"gender-{domain}-{frame_id}-{referent['id']}", more, less, direction,
                                    "gender", domain))
    return rows


def religion_pairs(families: Path) -> list[PairRow]:
    folder = families / "stereotype_pairs"
    terms = read_table(folder / "religion_terms.tsv")
    contrasts = [t["value"] for t in terms if t["kind"] == "contrast"]
    pools: dict[str, list[str]] = {}
    for term in terms:
        if term["kind"] != "contrast":
            pools.setdefault(term["kind"], []).append(term["value"])
    rows = []
    for domain in RELIGION_DOMAINS:
        path = folder / f"religion_{domain}.txt"
        for number, (frame_id, direction, target, pool, text) in read_frames(path, 5):
            where = f"{path}:{number}"
            if direction not in ("stereo", "antistereo"):
                raise FamilyError(f"{where}: '{direction}' is not stereo or antistereo")
            if pool not in pools:
                raise FamilyError(f"{where}: unknown pool '{pool}' ({', '.join(sorted(pools))})")
            if re.search(r"\b(?:a|an)\s+\{rel\}", text, re.IGNORECASE):
                raise FamilyError(f"{where}: 'a'/'an' before {{rel}} would differ between the two sentences")
            nouns = sorted(pools[pool], key=lambda noun: rank(domain, frame_id, noun))[:NOUNS_PER_FRAME]
            if len(nouns) < NOUNS_PER_FRAME:
                raise FamilyError(f"{where}: pool '{pool}' has {len(nouns)} nouns, fewer than {NOUNS_PER_FRAME}")
            for i, noun in enumerate(nouns):
                contrast = contrasts[i % len(contrasts)]
                with_target = fill(text, {"rel": target, "noun": noun}, where)
                with_contrast = fill(text, {"rel": contrast, "noun": noun}, where)
                more, less = (with_target, with_contrast) if direction == "stereo" else (with_contrast, with_target)
                rows.append(PairRow(f"religion-{domain}-{frame_id}-{slug(noun)}", more, less, direction,
                                    "religion", domain))
    return rows


def build_stereotype_pairs(families: Path) -> bytes:
    handwritten = families / "stereotype_pairs" / "handwritten.csv"
    with handwritten.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if tuple(header) != PAIR_COLUMNS:
            raise FamilyError(f"{handwritten}: columns must be {', '.join(PAIR_COLUMNS)}")
        rows = [PairRow(*cells) for cells in reader]
    rows += gender_pairs(families) + religion_pairs(families)
    seen_ids: set[str] = set()
    seen_pairs: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.id in seen_ids:
            raise FamilyError(f"item id '{row.id}' is made twice")
        seen_ids.add(row.id)
        key = (row.sent_more, row.sent_less)
        if key in seen_pairs or row.sent_more == row.sent_less:
            raise FamilyError(f"item '{row.id}' repeats '{seen_pairs.get(key, row.id)}' or has equal sentences")
        seen_pairs[key] = row.id
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PAIR_COLUMNS)
    writer.writerows(row.cells() for row in rows)
    return out.getvalue().encode("utf-8")


# -- stereoset ------------------------------------------------------------------------------------

AGES = {"adult": ("adult", "any"), "young": ("young", "any"), "all": ("adult", "any", "young")}
GOLD = (("stereotype", "stereo"), ("anti-stereotype", "anti"), ("unrelated", "unrel"))


def stereoset_examples(families: Path) -> dict[str, list[dict]]:
    folder = families / "stereoset"
    targets = read_table(folder / "targets.tsv")
    out: dict[str, list[dict]] = {}
    for split, short in (("intrasentence", "intra"), ("intersentence", "inter")):
        path = folder / f"{split}.txt"
        examples = []
        for number, (frame_id, domain, ages, context, female_text, male_text, unrelated) in read_frames(path, 7):
            where = f"{path}:{number}"
            if domain not in GENDER_DOMAINS:
                raise FamilyError(f"{where}: domain '{domain}' is not one of {', '.join(GENDER_DOMAINS)}")
            if ages not in AGES:
                raise FamilyError(f"{where}: ages '{ages}' is not one of {', '.join(AGES)}")
            if (split == "intrasentence") != ("BLANK" in context):
                raise FamilyError(f"{where}: an intrasentence context, and only one, holds BLANK")
            pairs = sorted((t for t in targets if t["age"] in AGES[ages]),
                           key=lambda t: rank(split, frame_id, t["id"]))[:STEREOSET_PAIRS_PER_FRAME]
            for pair in pairs:
                for gender in ("female", "male"):
                    term = pair[gender]
                    values = {"target": f"{pair['determiner']} {term}", **pronouns(gender)}
                    filled_context = fill(context, values, where)
                    by_gender = {"female": female_text, "male": male_text}
                    candidates = (by_gender[gender], by_gender[OTHER[gender]], unrelated)
                    if split == "intrasentence":
                        sentences = [filled_context.replace("BLANK", word) for word in candidates]
                    else:
                        sentences = [fill(text, values, where) for text in candidates]
                    example_id = f"ft-{short}-{frame_id}-{slug(term)}"
                    examples.append({
                        "id": example_id, "target": term, "bias_type": "gender", "domain": domain,
                        "context": filled_context,
                        "sentences": [{"sentence": sentence, "id": f"{example_id}-{suffix}",
                                       "labels": [{"label": gold, "human_id": AUTHORS}], "gold_label": gold}
                                      for sentence, (gold, suffix) in zip(sentences, GOLD)],
                    })
        out[split] = examples
    return out


def build_stereoset(families: Path) -> bytes:
    handwritten = json.loads((families / "stereoset" / "handwritten.json").read_text(encoding="utf-8"))
    generated = stereoset_examples(families)
    document = {"version": "fairtune-builtin-2.0", "data": {}}
    lines = ['{"version": ' + json.dumps(document["version"]) + ",",
             ' "about": ' + json.dumps(
                 "Our own writing, not StereoSet rows. Each split opens with 64 hand-written examples "
                 "(ids ft-intra-<target>-<n>, ft-inter-<target>-<n>); the rest are generated from "
                 "src/fairtune/audits/data/families/stereoset by scripts/build_builtin_suites.py. "
                 "Gender examples carry a 'domain' key.") + ",",
             ' "data": {']
    blocks = []
    for split in ("intrasentence", "intersentence"):
        examples = handwritten["data"][split] + generated[split]
        ids = [e["id"] for e in examples]
        if len(set(ids)) != len(ids):
            raise FamilyError(f"{split}: an example id is made twice")
        blocks.append("  " + json.dumps(split) + ": [\n"
                      + ",\n".join("   " + json.dumps(e, ensure_ascii=False) for e in examples) + "\n  ]")
    lines.append(",\n".join(blocks))
    lines += [" }", "}"]
    return ("\n".join(lines) + "\n").encode("utf-8")


# -- coreference (WinoBias layout) ------------------------------------------------------------------

def occupation_pairs(kind: str, frame_id: str, male: list[str], female: list[str]) -> list[tuple[str, str]]:
    """The frame's (male-majority, female-majority) pairs: lowest ranks first, no occupation twice."""
    candidates = sorted(((m, f) for m in male for f in female), key=lambda p: rank(kind, frame_id, *p))
    chosen, used = [], set()
    for m, f in candidates:
        if m not in used and f not in used:
            chosen.append((m, f))
            used |= {m, f}
        if len(chosen) == OCCUPATION_PAIRS_PER_FRAME:
            break
    return chosen


def winobias_lines(families: Path) -> dict[str, list[str]]:
    """Generated lines (unnumbered) of each of the four WinoBias files."""
    folder = families / "coreference"
    majority = {row["occupation"]: row["majority"] for row in read_table(folder / "occupations.tsv")}
    male = [o for o, g in majority.items() if g == "male"]
    female = [o for o, g in majority.items() if g == "female"]
    out: dict[str, list[str]] = {name: [] for name in WINOBIAS_FILES}

    def emit(kind: str, text: str, a: str, b: str, referent: str, where: str) -> None:
        gender = majority[referent]
        for stance, pronoun_gender in (("pro", gender), ("anti", OTHER[gender])):
            line = fill(text, {"a": a, "b": b, **pronouns(pronoun_gender)}, where)
            out[f"{stance}_stereotyped_{kind}.txt"].append(line)

    path = folder / "type1.txt"
    variants: dict[str, dict[str, tuple[int, str]]] = {}
    for number, (frame_id, variant, text) in read_frames(path, 3):
        if variant not in ("a", "b") or variant in variants.get(frame_id, {}):
            raise FamilyError(f"{path}:{number}: variant must be a or b, once each per frame")
        variants.setdefault(frame_id, {})[variant] = (number, text)
    for frame_id, by_variant in variants.items():
        if set(by_variant) != {"a", "b"}:
            raise FamilyError(f"{path}: frame '{frame_id}' needs both variants a and b")
        for m, f in occupation_pairs("type1", frame_id, male, female):
            a, b = (m, f) if int(rank("type1-order", frame_id, m, f), 16) % 2 == 0 else (f, m)
            for variant, referent in (("a", a), ("b", b)):
                number, text = by_variant[variant]
                emit("type1", text, a, b, referent, f"{path}:{number}")
    path = folder / "type2.txt"
    for number, (frame_id, text) in read_frames(path, 2):
        for m, f in occupation_pairs("type2", frame_id, male, female):
            for a, b in ((m, f), (f, m)):
                emit("type2", text, a, b, b, f"{path}:{number}")
    return out


def build_winobias(families: Path) -> dict[str, bytes]:
    generated = winobias_lines(families)
    files = {}
    for name in WINOBIAS_FILES:
        lines = (families / "coreference" / f"handwritten_{name}").read_text(encoding="utf-8").splitlines()
        start = len(lines)
        lines += [f"{start + i} {line}" for i, line in enumerate(generated[name], start=1)]
        files[f"coreference_suite/{name}"] = ("\n".join(lines) + "\n").encode("utf-8")
    return files


# -- all of it --------------------------------------------------------------------------------------

def build_all(families: Path = FAMILIES) -> dict[str, bytes]:
    """Every generated suite file: its path relative to the audits' data folder -> its bytes."""
    return {"stereotype_pairs.csv": build_stereotype_pairs(families),
            "stereoset_builtin.json": build_stereoset(families),
            **build_winobias(families)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    parser.add_argument("--out", type=Path, default=DATA, help="folder to write into (default: the package data)")
    args = parser.parse_args(argv)
    files = build_all()
    if args.check:
        stale = [name for name, content in files.items()
                 if not (DATA / name).is_file() or (DATA / name).read_bytes() != content]
        for name in stale:
            print(f"differs from what the families make: {DATA / name}", file=sys.stderr)
        return 1 if stale else 0
    for name, content in files.items():
        target = args.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        print(f"wrote {target} ({len(content.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
