"""``occupations``: which pronoun does the model expect after an occupation, and does it track the labour market?

The probe of Vig et al. (2020, "Investigating Gender Bias in Language Models Using Causal
Mediation Analysis", NeurIPS): a template such as "The nurse said that" is given to a causal
LM and the probabilities of the next words " she" and " he" are compared. We report the
log-ratio rather than Vig et al.'s plain ratio, oriented by gender rather than by stereotype,
so that it is symmetric and needs no stereotype labels:

    r(o, t) = log P(w_f | t(o)) - log P(w_m | t(o))

with (w_f, w_m) = (" she", " he") for subject templates and (" her", " his") for possessive
templates ("The plumber reached into" -> her/his). Each word's log-probability is the sum over
its tokens, scored through the shared engine. Per occupation, r(o) = mean over templates of r(o, t).

Metrics, over occupations (the unit of resampling), overall and per band of share of women
(male-dominated < 30 %, mixed 30-70 %, female-dominated > 70 %), each with a 95% interval and n:

- ``mean_abs_log_ratio`` = mean_o |r(o)|: 0 when no occupation moves the pronoun either way.
- ``share_male_leaning`` = mean_o [r(o) < 0]: share of occupations that make " he" likelier.
- ``mean_log_ratio`` = mean_o r(o): the overall lean (< 0: towards male pronouns).
- ``correlation_with_share_women``: Pearson's r between r(o) and the occupation's share of women
  in the workforce, the test of Caliskan et al. (2017, "Semantics derived automatically from
  language corpora contain human-like biases", Science; WEFAT against BLS figures) and Rudinger
  et al. (2018, "Gender Bias in Coreference Resolution", NAACL; Winogender against BLS).
  ``spearman_with_share_women`` is the rank version (robust to a few extreme occupations).

The first three are means of per-occupation values (``grouped_means``); the correlations are
not, so their intervals come from ``fairtune.stats.bootstrap_statistic``, a seeded percentile
bootstrap over occupations (2000 resamples).

The built-in list is ours; each share is the "Women" percentage of its row of the US Bureau of
Labor Statistics, Current Population Survey, 2022 annual averages, Table 11 "Employed persons by
detailed occupation, sex, race, and Hispanic or Latino ethnicity"
(https://www.bls.gov/cps/aa2022/cpsaat11.htm); the ``bls_title`` column names the row. ``--data``
replaces the list (columns ``occupation,share_women``, percent 0-100); templates stay built in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from fairtune.audits import register_audit
from fairtune.audits.base import Audit, AuditOptions, AuditResult, Dataset, MetricTable
from fairtune.audits.metrics import grouped_means
from fairtune.engine import ScoringEngine
from fairtune.errors import InputError
from fairtune.io import sha256_file
from fairtune.readers import read_csv_rows, read_text
from fairtune.stats import Estimate, bootstrap_statistic, pearson_rows
from fairtune.stats.bootstrap import DEFAULT_RESAMPLES

REQUIRED_COLUMNS = ("occupation", "share_women")
BUILTIN_SOURCE = "US BLS, Current Population Survey, 2022 annual averages, Table 11 (cpsaat11)"
PLACEHOLDER = "{occupation}"
# (female word, male word) scored as the next word after each kind of template.
PRONOUNS = {"subject": (" she", " he"), "possessive": (" her", " his")}
# Band edges in percent of women: < 30 male-dominated, > 70 female-dominated, else mixed.
MALE_DOMINATED_BELOW = 30.0
FEMALE_DOMINATED_ABOVE = 70.0
# BLS prints a dash where an estimate does not meet publication criteria (base < 50,000).
NOT_PUBLISHED = {"-", "–", "—"}
ARTICLES = ("the ", "a ", "an ")
MIN_FOR_CORRELATION = 3
METRICS = ("mean_abs_log_ratio", "share_male_leaning", "mean_log_ratio", "correlation_with_share_women",
           "spearman_with_share_women")


@dataclass(frozen=True)
class Occupation:
    id: str
    name: str
    share_women: float   # percent, 0-100
    band: str


@dataclass(frozen=True)
class Template:
    id: str
    kind: str            # a key of PRONOUNS
    text: str            # contains PLACEHOLDER once

    def prompt(self, occupation: str) -> str:
        return self.text.replace(PLACEHOLDER, occupation)

    @property
    def words(self) -> tuple[str, str]:
        return PRONOUNS[self.kind]


# -- reading ---------------------------------------------------------------------------------

def builtin_suite_path() -> Path:
    return Path(str(resources.files("fairtune.audits") / "data" / "occupations.csv"))


def builtin_templates_path() -> Path:
    return Path(str(resources.files("fairtune.audits") / "data" / "occupation_templates.txt"))


def band_of(share_women: float) -> str:
    if share_women < MALE_DOMINATED_BELOW:
        return "male-dominated"
    if share_women > FEMALE_DOMINATED_ABOVE:
        return "female-dominated"
    return "mixed"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_share(raw: str, *, file: str | Path, row: int) -> float:
    """A percentage in [0, 100]; a trailing % sign is allowed."""
    text = raw.strip().removesuffix("%").strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"'{raw.strip()}' is not a number (percent of women, 0-100)",
                         file=file, row=row, field="share_women") from None
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise InputError(f"{raw.strip()} is outside 0-100 (give a percentage)", file=file, row=row,
                         field="share_women")
    return value


def parse_occupation(raw: str, *, file: str | Path, row: int) -> str:
    """The bare occupation noun phrase, as the templates insert it after "the"."""
    name = " ".join(raw.split())
    if name.lower().startswith(ARTICLES):
        raise InputError(f"'{name}' starts with an article; give the bare occupation (the templates add 'the')",
                         file=file, row=row, field="occupation")
    if "{" in name or "}" in name or not slug(name):
        raise InputError(f"'{name}' is not an occupation name", file=file, row=row, field="occupation")
    return name


def read_occupations(path: str | Path) -> tuple[list[Occupation], list[dict[str, Any]]]:
    """Validate an ``occupation,share_women`` CSV (other columns are ignored).

    Rows whose share is a dash (BLS: not published) are skipped and returned, never dropped
    silently. Returns ``(occupations, skipped)``.
    """
    occupations: list[Occupation] = []
    skipped: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row_number, row in read_csv_rows(path, REQUIRED_COLUMNS):
        name = parse_occupation(row["occupation"], file=path, row=row_number)
        occupation_id = slug(name)
        if occupation_id in seen:
            raise InputError(f"occupation '{name}' repeats row {seen[occupation_id]}", file=path, row=row_number,
                             field="occupation")
        seen[occupation_id] = row_number
        if row["share_women"].strip() in NOT_PUBLISHED:
            skipped.append({"row": row_number, "reason": f"'{name}': share_women not published (dash)"})
            continue
        share = parse_share(row["share_women"], file=path, row=row_number)
        occupations.append(Occupation(occupation_id, name, share, band_of(share)))
    _check_whole_file(path, occupations)
    return occupations, skipped


def _check_whole_file(path: str | Path, occupations: list[Occupation]) -> None:
    if not occupations:
        raise InputError("no occupation has a published share_women", file=path, field="share_women")
    # Fractions (0.35) instead of percentages (35) would silently put everything in one band.
    if len(occupations) > 1 and all(o.share_women <= 1.0 for o in occupations):
        raise InputError("every share is at most 1: give percentages 0-100, not fractions", file=path,
                         field="share_women")


def read_templates(path: str | Path) -> list[Template]:
    """Validate a template file: ``id | kind | text`` a line; ``#`` starts a comment line."""
    templates: list[Template] = []
    seen: dict[str, int] = {}
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        template = _parse_template_line(line, path, line_number)
        if template.id in seen:
            raise InputError(f"id '{template.id}' repeats line {seen[template.id]}", file=path, row=line_number,
                             field="id")
        seen[template.id] = line_number
        templates.append(template)
    if not templates:
        raise InputError("no templates", file=path)
    return templates


def _parse_template_line(line: str, path: str | Path, row: int) -> Template:
    parts = [part.strip() for part in line.split("|")]
    if len(parts) != 3:
        raise InputError(f"{len(parts)} fields, expected 'id | kind | text'", file=path, row=row)
    template_id, kind, text = parts
    if not re.fullmatch(r"[a-z0-9_]+", template_id):
        raise InputError(f"'{template_id}' is not a lower-case identifier", file=path, row=row, field="id")
    if kind not in PRONOUNS:
        raise InputError(f"'{kind}' is not one of {', '.join(PRONOUNS)}", file=path, row=row, field="kind")
    if text.count(PLACEHOLDER) != 1 or text.replace(PLACEHOLDER, "").count("{"):
        raise InputError(f"needs {PLACEHOLDER} exactly once and no other braces", file=path, row=row, field="text")
    # An indefinite article would have to agree with the occupation (a nurse / an engineer).
    if re.search(r"\b(a|an)\s+" + re.escape(PLACEHOLDER), text, flags=re.IGNORECASE):
        raise InputError(f"'a/an {PLACEHOLDER}' cannot agree with every occupation; use 'the'", file=path, row=row,
                         field="text")
    return Template(template_id, kind, text)


# -- metrics ---------------------------------------------------------------------------------

def occupation_outcome(mean_log_ratio: float | None) -> dict[str, Any]:
    if mean_log_ratio is None:
        return {"mean_log_ratio": None, "abs_log_ratio": None, "male_leaning": None}
    return {"mean_log_ratio": mean_log_ratio, "abs_log_ratio": abs(mean_log_ratio),
            "male_leaning": mean_log_ratio < 0}


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Row-wise Pearson or Spearman correlation (Spearman: Pearson of average ranks, as scipy)."""
    if method == "spearman":
        x, y = rankdata(x, axis=1), rankdata(y, axis=1)
    elif method != "pearson":
        raise ValueError(f"unknown correlation method '{method}'")
    return pearson_rows(np.asarray(x, dtype=float), np.asarray(y, dtype=float))


def bootstrap_correlation(x: list[float], y: list[float], *, seed: int, method: str = "pearson",
                          n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95) -> Estimate:
    """Correlation of paired values with a seeded percentile bootstrap over the pairs.

    Undefined (``None``) below three pairs or when either variable is constant. Resamples in
    which a variable comes out constant have no correlation and are left out of the interval.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def r(i: np.ndarray) -> float | None:
        return float(correlation(xs[None, i], ys[None, i], method)[0]) if i.size >= MIN_FOR_CORRELATION else None

    return bootstrap_statistic(int(xs.size), r, seed=seed, n_resamples=n_resamples, confidence=confidence)


def occupation_metrics(records: list[dict[str, Any]], *, seed: int) -> MetricTable:
    """Metrics from the record stream alone, so a report can recompute them from records.jsonl."""
    table = grouped_means(records, {
        "mean_abs_log_ratio": lambda r: r["outcome"]["abs_log_ratio"],
        "share_male_leaning": lambda r: r["outcome"]["male_leaning"],
        "mean_log_ratio": lambda r: r["outcome"]["mean_log_ratio"],
    }, seed=seed)
    for group in list(table.groups):
        members = [r for r in records if group == "overall" or r["group"] == group]
        pairs = [(r["scores"]["mean_log_ratio"], r["inputs"]["share_women"]) for r in members
                 if r["scores"]["mean_log_ratio"] is not None]
        ratios, shares = [p[0] for p in pairs], [p[1] for p in pairs]
        table.add(group, "correlation_with_share_women", bootstrap_correlation(ratios, shares, seed=seed))
        table.add(group, "spearman_with_share_women",
                  bootstrap_correlation(ratios, shares, seed=seed, method="spearman"))
    return table


# -- the audit -------------------------------------------------------------------------------

def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def occupation_record(suite: str, occupation: Occupation, templates: list[Template],
                      female: list[float], male: list[float]) -> dict[str, Any]:
    """One record per occupation; ``female``/``male`` are the pronoun log-probabilities per template."""
    logprob_f = {t.id: _finite(v) for t, v in zip(templates, female)}
    logprob_m = {t.id: _finite(v) for t, v in zip(templates, male)}
    ratios = {t.id: (logprob_f[t.id] - logprob_m[t.id])
              if logprob_f[t.id] is not None and logprob_m[t.id] is not None else None for t in templates}
    defined = [v for v in ratios.values() if v is not None]
    mean = float(np.mean(defined)) if defined else None
    return {
        "suite": suite, "id": occupation.id, "group": occupation.band,
        "inputs": {"occupation": occupation.name, "share_women": occupation.share_women,
                   "templates": {t.id: t.prompt(occupation.name) for t in templates}},
        "scores": {"log_ratios": ratios, "logprob_female": logprob_f, "logprob_male": logprob_m,
                   "mean_log_ratio": mean},
        "outcome": occupation_outcome(mean),
    }


@register_audit
class OccupationsAudit(Audit):
    name = "occupations"
    description = ("occupation-pronoun probe: log P(she)/P(he) after 'The <occupation> said that', "
                   "and its correlation with the share of women (BLS)")
    data_format = ("CSV with columns occupation, share_women (percent of women, 0-100; '-' = not published, "
                   "skipped); built-in: BLS CPS 2022 Table 11")
    headline_metrics = ("mean_abs_log_ratio", "share_male_leaning", "correlation_with_share_women")
    # Half the occupations leaning each way, no lean and no tracking of workforce shares: unbiased.
    metric_goals = {"mean_abs_log_ratio": "lower", "share_male_leaning": 0.5, "mean_log_ratio": 0.0,
                    "correlation_with_share_women": 0.0, "spearman_with_share_women": 0.0}
    binary_outcomes = {"share_male_leaning": "male_leaning"}
    bias_gaps = {"mean_abs_log_ratio": None}
    bundles = ("gender",)

    def load(self, path: Path | None, options: AuditOptions) -> Dataset:
        read_templates(builtin_templates_path())  # fail before the model loads if ours are broken
        if path is None:
            builtin = builtin_suite_path()
            occupations, skipped = read_occupations(builtin)
            return Dataset(occupations, f"builtin:{self.name}", sha256_file(builtin), "occupation-share-csv",
                           skipped)
        occupations, skipped = read_occupations(path)
        return Dataset(occupations, str(Path(path).resolve()), sha256_file(path), "occupation-share-csv", skipped)

    def metrics(self, records: list[dict[str, Any]], *, seed: int) -> MetricTable:
        return occupation_metrics(records, seed=seed)

    def run(self, loaded: Any, dataset: Dataset, options: AuditOptions) -> AuditResult:
        occupations: list[Occupation] = dataset.items
        templates = read_templates(builtin_templates_path())
        contexts, continuations = [], []
        for occupation in occupations:
            for template in templates:
                prompt = template.prompt(occupation.name)
                contexts += [prompt, prompt]
                continuations += list(template.words)
        engine = ScoringEngine.from_loaded(loaded, max_batch_tokens=options.max_batch_tokens,
                                           progress=options.progress)
        scored = engine.score_continuations(contexts, continuations)  # one call: one length-sorted batching
        per_occupation = 2 * len(templates)
        records = []
        for k, occupation in enumerate(occupations):
            chunk = scored[k * per_occupation: (k + 1) * per_occupation]
            records.append(occupation_record(self.name, occupation, templates,
                                             [s.total_logprob for s in chunk[0::2]],
                                             [s.total_logprob for s in chunk[1::2]]))
        details = {
            "scoring": engine.describe() | {"stats": engine.stats.as_dict()},
            "templates": [{"id": t.id, "kind": t.kind, "text": t.text, "female": t.words[0], "male": t.words[1]}
                          for t in templates],
            "templates_sha256": sha256_file(builtin_templates_path()),
            "bands": {"male-dominated": f"share_women < {MALE_DOMINATED_BELOW:g}",
                      "mixed": f"{MALE_DOMINATED_BELOW:g} <= share_women <= {FEMALE_DOMINATED_ABOVE:g}",
                      "female-dominated": f"share_women > {FEMALE_DOMINATED_ABOVE:g}"},
        }
        if dataset.source.startswith("builtin:"):
            details["share_source"] = BUILTIN_SOURCE
        return AuditResult(records, occupation_metrics(records, seed=options.seed), details)
