"""Duplicate removal and the train/validation split.

Records that belong together carry the same ``meta.group`` (an original and its counterfactual,
one template filled with every attribute value). They differ by a word or two *by design*, so
duplicate checks compare groups, not records: a group is kept or dropped whole, and never split
across train and validation (which would leak the pair's other half into validation).

Records may also carry ``meta.family``: the template frame (or, for corpus text, the document)
that a group was made from. :func:`split` with ``by="family"`` holds out whole families, so that
validation measures generalisation to frames and documents never trained on.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass, field

from fairtune.curation.records import Record, meta, record_key, record_texts

_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    """Case, accents, punctuation and spacing folded away: what "the same text" means here."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(_WORD.findall(text.lower()))


def group_of(record: Record) -> str:
    return str(meta(record).get("group") or record.get("id") or record_key(record))


def _groups(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(group_of(record), []).append(record)
    return groups


def _group_text(members: list[Record]) -> str:
    # The group's first record stands for it (the original, or the template's first filling).
    return normalise(" ".join(record_texts(members[0])))


@dataclass
class DedupReport:
    exact: list[dict] = field(default_factory=list)   # {"dropped": id, "kept": id}
    near: list[dict] = field(default_factory=list)    # {"dropped": id, "kept": id, "jaccard": float}


def deduplicate(records: list[Record], *, near_threshold: float | None = 0.85, shingle: int = 3,
                num_perm: int = 128, seed: int = 0,
                near_exempt_kinds: tuple[str, ...] = ()) -> tuple[list[Record], DedupReport]:
    """Drop exact duplicates (same normalised text) and near duplicates (MinHash estimate of the
    Jaccard similarity of word ``shingle``-grams at or above ``near_threshold``; ``None`` turns
    the near check off). The first occurrence is kept; order is preserved.

    Groups whose records all have a ``meta.kind`` in ``near_exempt_kinds`` (e.g. ``template``,
    ``context``: fillings of one frame share it by design) take no part in the near check; the
    exact check still applies to them."""
    report = DedupReport()
    groups = {}
    for name, members in _groups(records).items():
        # Inside a group only byte-identical bodies are duplicates: its members differ on purpose.
        unique = {record_key(r): r for r in reversed(members)}
        report.exact += [{"dropped": str(r.get("id", name)), "kept": name}
                         for r in members if unique.get(record_key(r)) is not r]
        groups[name] = [r for r in members if unique.get(record_key(r)) is r]
    kept_groups: list[str] = []
    seen_exact: dict[str, str] = {}
    for name, members in groups.items():
        text = _group_text(members)
        if text in seen_exact:
            report.exact.append({"dropped": name, "kept": seen_exact[text]})
            continue
        seen_exact[text] = name
        kept_groups.append(name)

    if near_threshold is not None:
        exempt = {name for name in kept_groups if near_exempt_kinds
                  and all(meta(r).get("kind") in near_exempt_kinds for r in groups[name])}
        candidates = [name for name in kept_groups if name not in exempt]
        if len(candidates) > 1:
            survivors = set(_drop_near(groups, candidates, near_threshold, shingle, num_perm, seed, report))
            kept_groups = [name for name in kept_groups if name in survivors or name in exempt]
    return [r for name in kept_groups for r in groups[name]], report


def _shingles(text: str, size: int) -> set[bytes]:
    words = text.split()
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


def _drop_near(groups, names, threshold, shingle, num_perm, seed, report) -> list[str]:
    from datasketch import MinHash, MinHashLSH

    # LSH's threshold is the middle of an S-curve, so pairs just above it are missed half the
    # time; a lower candidate threshold makes misses rare, and the exact Jaccard then decides.
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.25), num_perm=num_perm)
    shingles = {name: _shingles(_group_text(groups[name]), shingle) for name in names}
    kept = []
    for name in names:
        signature = MinHash(num_perm=num_perm, seed=seed)
        signature.update_batch(list(shingles[name]))
        best = max(((_jaccard(shingles[name], shingles[c]), c) for c in lsh.query(signature)),
                   default=(0.0, None))
        if best[1] is not None and best[0] >= threshold:
            report.near.append({"dropped": name, "kept": best[1], "jaccard": round(best[0], 3)})
            continue
        lsh.insert(name, signature)
        kept.append(name)
    return kept


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


SPLIT_BY = ("group", "family")


def family_of(record: Record) -> str:
    """The record's ``meta.family`` (its template frame or source document), else its group."""
    family = meta(record).get("family")
    return str(family) if family is not None and str(family).strip() else group_of(record)


def split(records: list[Record], *, validation_fraction: float, seed: int,
          by: str = "group") -> tuple[list[Record], list[Record]]:
    """Seeded split. The same records and seed always give the same split.

    ``by="group"`` holds out a share of the groups. ``by="family"`` holds out a share of the
    families (:func:`family_of`; a group goes with the family of its first record, so groups stay
    whole either way), drawn separately within each stratum of ``meta.domain`` and pairs vs
    contexts (``meta.kind == "context"``), so that validation holds every domain's pairs and
    contexts: at least one family of each stratum that has two or more, never all of them.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError("validation_fraction must be in [0, 1)")
    if by not in SPLIT_BY:
        raise ValueError(f"split by must be one of {', '.join(SPLIT_BY)}, got {by!r}")
    groups = _groups(records)
    if by == "family":
        return _split_by_family(groups, validation_fraction, seed)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    n_validation = round(len(names) * validation_fraction)
    if validation_fraction > 0 and len(names) > 1:
        n_validation = max(1, n_validation)
    validation_names = set(names[:n_validation])
    train = [r for name, members in groups.items() if name not in validation_names for r in members]
    validation = [r for name, members in groups.items() if name in validation_names for r in members]
    return train, validation


def _stratum(record: Record) -> tuple[str, str]:
    info = meta(record)
    return str(info.get("domain") or ""), "context" if info.get("kind") == "context" else "pair"


def _split_by_family(groups: dict[str, list[Record]], validation_fraction: float,
                     seed: int) -> tuple[list[Record], list[Record]]:
    families: dict[str, list[str]] = {}
    for name, members in groups.items():
        families.setdefault(family_of(members[0]), []).append(name)
    strata: dict[tuple[str, str], list[str]] = {}
    for family, names in families.items():
        strata.setdefault(_stratum(groups[names[0]][0]), []).append(family)
    held: set[str] = set()
    for key in sorted(strata):
        members = sorted(strata[key])
        random.Random(f"{seed}|{key[0]}|{key[1]}").shuffle(members)
        n_validation = round(len(members) * validation_fraction)
        if validation_fraction > 0 and len(members) > 1:
            n_validation = min(max(1, n_validation), len(members) - 1)
        held.update(members[:n_validation])
    validation_groups = {name for family in held for name in families[family]}
    train = [r for name, members in groups.items() if name not in validation_groups for r in members]
    validation = [r for name, members in groups.items() if name in validation_groups for r in members]
    return train, validation
