"""Paired comparison of two runs of the same audits: per-metric deltas, intervals and tests.

Two runs of one audit on the same data hold the same item ids, so every item is measured twice
(before and after tuning, say). Comparing the runs item by item removes the variation between
items from the comparison, which is what makes a 2-point change on 130 prompts detectable at all.

For every audit present in both runs and every metric present in both summaries (``overall``,
and with ``groups=True`` every group both have):

- ``a``, ``b``: the metric recomputed by the audit's own :meth:`~fairtune.audits.base.Audit.metrics`
  on the *paired* records of each run (items present in both), so both numbers rest on the same
  items; ``delta = b - a``.
- ``ci_low``, ``ci_high``: a paired percentile bootstrap (95%): clusters
  (:meth:`~fairtune.audits.base.Audit.cluster`, usually single items) are drawn with replacement,
  the *same* draw for both runs, and ``delta`` is recomputed on each draw.
- ``test``: McNemar's test (exact binomial below 25 discordant pairs) for a metric that is the
  mean of a 0/1 outcome (:attr:`~fairtune.audits.base.Audit.binary_outcomes`); otherwise a paired
  permutation test: each cluster's two measurements are swapped with probability 1/2 and
  ``p = (1 + #{|delta_perm| >= |delta|}) / (1 + n_perm)``.
- ``p_holm``: Holm's step-down correction over every test of the comparison, since a comparison
  runs dozens of tests and some would pass p < 0.05 by chance alone.
- ``change``: ``improved`` / ``regressed`` when ``p_holm < 0.05`` and the delta moves towards / away
  from the metric's goal (:attr:`~fairtune.audits.base.Audit.metric_goals`), ``unchanged`` when not
  significant, ``unknown`` when the metric has no goal or no value.

Two ways to resample, with identical draws. A metric that is the plain mean of a per-record value
(a rate, a mean score) is resampled as a weighted mean of those values, vectorised over all draws;
any other metric (a correlation, a regression slope, a ratio of sums) is recomputed by the audit on
every resampled record list (``point_estimates()``, so no bootstrap runs inside the bootstrap).
Whether a metric is a mean is not declared but checked: its per-record values are read off the
audit's metrics of each record alone, and the metric must equal their mean on the paired records
and on a few resampled and permuted record lists, else it takes the general path.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fairtune.audits import AUDITS, Audit
from fairtune.errors import InputError
from fairtune.stats import point_estimates

if TYPE_CHECKING:
    from fairtune.compare.gates import GateResult

RECORDS_FILE = "records.jsonl"
SUMMARY_FILE = "summary.json"
BUNDLE_FILE = "bundle.json"
RECORD_KEYS = ("suite", "id", "group", "inputs", "scores", "outcome")
OVERALL = "overall"
ALPHA = 0.05                # significance level after Holm's correction
CONFIDENCE = 0.95
EXACT_MCNEMAR_BELOW = 25    # discordant pairs; below this the chi-square approximation is poor
MEAN_CHECK_DRAWS = 3        # resampled and permuted record lists on which a "mean" must hold exactly

Goal = str | float
Key = tuple[str, str]       # (group, metric)


# --- results -------------------------------------------------------------------------------------

@dataclass
class MetricComparison:
    """One metric of one group, compared between the runs (one row of comparison.json)."""

    metric: str
    group: str
    a: float | None
    b: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    test: str | None            # "mcnemar" | "permutation" | None (no value to test)
    p_value: float | None
    p_holm: float | None
    goal: Goal | None
    change: str                 # "improved" | "regressed" | "unchanged" | "unknown"

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "group": self.group, "a": self.a, "b": self.b, "delta": self.delta,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "test": self.test, "p_value": self.p_value,
                "p_holm": self.p_holm, "goal": self.goal, "change": self.change}


@dataclass
class AuditComparison:
    """One audit's paired records and metric rows."""

    n_paired: int
    n_only_a: int
    n_only_b: int
    metrics: list[MetricComparison]

    def as_dict(self) -> dict[str, Any]:
        return {"n_paired": self.n_paired, "n_only_a": self.n_only_a, "n_only_b": self.n_only_b,
                "metrics": [m.as_dict() for m in self.metrics]}

    def row(self, metric: str, group: str = OVERALL) -> MetricComparison | None:
        return next((m for m in self.metrics if m.metric == metric and m.group == group), None)


@dataclass
class Comparison:
    """Everything ``fairtune compare`` reports; :meth:`as_dict` is comparison.json's schema."""

    run_a: str
    run_b: str
    seed: int
    n_resamples: int
    audits: dict[str, AuditComparison]
    only_in_a: list[str]
    only_in_b: list[str]
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every gate passed (true when there are none)."""
        return all(g.passed for g in self.gates)

    @property
    def regressions(self) -> list[dict[str, Any]]:
        return [{"audit": name, "metric": m.metric, "group": m.group, "delta": m.delta}
                for name, audit in self.audits.items() for m in audit.metrics if m.change == "regressed"]

    def as_dict(self) -> dict[str, Any]:
        return {"run_a": self.run_a, "run_b": self.run_b, "seed": self.seed, "n_resamples": self.n_resamples,
                "audits": {name: audit.as_dict() for name, audit in self.audits.items()},
                "only_in_a": list(self.only_in_a), "only_in_b": list(self.only_in_b),
                "regressions": self.regressions, "gates": [g.as_dict() for g in self.gates],
                "passed": self.passed}


# --- reading run directories ---------------------------------------------------------------------

@dataclass
class AuditRunFiles:
    """One audit run directory, read and checked."""

    suite: str
    path: Path
    summary: dict[str, Any]
    records: list[dict[str, Any]]


def read_runs(path: str | Path) -> dict[str, AuditRunFiles]:
    """The audit runs in ``path`` by audit name: one for an audit run directory, one per audit for
    a bundle directory (``bundle.json`` beside ``<audit>/``). Anything else is an InputError that
    names the file and the field, raised before any statistics run."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such run directory", file=path)
    if not path.is_dir():
        raise InputError("not a directory: expected an audit or bundle run directory", file=path)
    if (path / SUMMARY_FILE).exists() or (path / RECORDS_FILE).exists():
        run = _read_audit_run(path)
        return {run.suite: run}
    if (path / BUNDLE_FILE).exists():
        from fairtune.readers import read_json

        index = read_json(path / BUNDLE_FILE)
        audits = index.get("audits") if isinstance(index, dict) else None
        if not isinstance(audits, dict):
            raise InputError("expected a mapping of audit names", file=path / BUNDLE_FILE, field="audits")
        return {name: _read_audit_run(path / name, expected=name) for name in audits}
    raise InputError(f"not a run directory: expected {RECORDS_FILE} and {SUMMARY_FILE} (an audit run) or "
                     f"{BUNDLE_FILE} (a bundle run)", file=path)


def _read_audit_run(path: Path, expected: str | None = None) -> AuditRunFiles:
    from fairtune.readers import read_json, read_jsonl_rows

    for name in (SUMMARY_FILE, RECORDS_FILE):
        if not (path / name).is_file():
            raise InputError("missing: an audit run directory holds records.jsonl and summary.json",
                             file=path / name)
    summary_path = path / SUMMARY_FILE
    summary = read_json(summary_path)
    if not isinstance(summary, dict):
        raise InputError("expected a JSON object", file=summary_path)
    suite = summary.get("suite")
    if suite not in AUDITS:
        raise InputError(f"{suite!r} is not a known audit ({', '.join(sorted(AUDITS))})", file=summary_path,
                         field="suite")
    if expected is not None and suite != expected:
        raise InputError(f"'{suite}' in the directory of audit '{expected}'", file=summary_path, field="suite")
    metrics = summary.get("metrics")
    if not isinstance(metrics, dict) or not isinstance(metrics.get(OVERALL), dict) or not all(
            isinstance(group, dict) for group in metrics.values()):
        raise InputError("expected metrics by group, with an 'overall' group", file=summary_path, field="metrics")
    records_path = path / RECORDS_FILE
    records, rows = [], {}
    for row, record in read_jsonl_rows(records_path):
        for key in RECORD_KEYS:
            if key not in record:
                raise InputError("missing", file=records_path, row=row, field=key)
        if record["suite"] != suite:
            raise InputError(f"'{record['suite']}' in a run of '{suite}'", file=records_path, row=row, field="suite")
        item_id = str(record["id"])
        if item_id in rows:
            raise InputError(f"id '{item_id}' repeats row {rows[item_id]}; runs pair records by id",
                             file=records_path, row=row, field="id")
        rows[item_id] = row
        records.append(record)
    return AuditRunFiles(suite, path, summary, records)


# --- the comparison ------------------------------------------------------------------------------

def compare_runs(run_a: str | Path, run_b: str | Path, *, seed: int = 0, n_resamples: int = 1000,
                 groups: bool | Sequence[str] = False) -> Comparison:
    """Compare two audit run directories, or two bundle directories (audits paired by name; an
    audit in only one of them is listed in ``only_in_a``/``only_in_b``, not compared).

    Seeded: the same runs and seed give the same comparison. Gates are applied afterwards by
    :func:`fairtune.compare.gates.evaluate_gates`.
    """
    if n_resamples < 1:
        raise InputError(f"n_resamples must be at least 1, got {n_resamples}")
    if seed < 0:
        raise InputError(f"the seed must not be negative, got {seed}")
    runs_a, runs_b = read_runs(run_a), read_runs(run_b)   # both read before any work starts
    shared = [name for name in runs_a if name in runs_b]
    audits = {name: compare_audit(AUDITS[name](), runs_a[name], runs_b[name], seed=seed,
                                  n_resamples=n_resamples, groups=groups) for name in shared}
    comparison = Comparison(str(run_a), str(run_b), seed, n_resamples, audits,
                            only_in_a=sorted(set(runs_a) - set(runs_b)), only_in_b=sorted(set(runs_b) - set(runs_a)))
    apply_holm(comparison)
    return comparison


def compare_audit(audit: Audit, run_a: AuditRunFiles, run_b: AuditRunFiles, *, seed: int, n_resamples: int,
                  groups: bool | Sequence[str] = False, vectorise: bool = True) -> AuditComparison:
    """One audit's paired comparison, without Holm's correction (``p_holm`` and ``change`` are
    filled by :func:`apply_holm` across the whole comparison). ``vectorise=False`` sends every
    metric through the general path, which must agree with the vectorised one on mean metrics."""
    by_id_b = {str(r["id"]): r for r in run_b.records}
    paired_a = [r for r in run_a.records if str(r["id"]) in by_id_b]
    paired_b = [by_id_b[str(r["id"])] for r in paired_a]
    keys = metric_keys(run_a.summary, run_b.summary, groups=groups)
    rows = [MetricComparison(metric, group, None, None, None, None, None, None, None, None,
                             audit.metric_goals.get(metric), "unknown") for group, metric in keys]
    if paired_a:
        _PairedResampler(audit, paired_a, paired_b, keys, seed=seed, n_resamples=n_resamples,
                         vectorise=vectorise).fill(rows)
    return AuditComparison(len(paired_a), len(run_a.records) - len(paired_a), len(run_b.records) - len(paired_b),
                           rows)


def metric_keys(summary_a: dict[str, Any], summary_b: dict[str, Any], *, groups: bool | Sequence[str]) -> list[Key]:
    """(group, metric) pairs present in both summaries, in run A's order: ``overall`` always,
    every shared group with ``groups=True``, or with a list of names those groups and their
    ``<name>:`` subgroups (``gender`` and ``gender:traits``)."""
    def wanted(group: str) -> bool:
        if isinstance(groups, bool):
            return groups
        return any(group == name or group.startswith(f"{name}:") for name in groups)

    names = [OVERALL] + [g for g in summary_a["metrics"] if g != OVERALL and g in summary_b["metrics"] and wanted(g)]
    return [(group, metric) for group in names for metric in summary_a["metrics"][group]
            if metric in summary_b["metrics"][group]]


def apply_holm(comparison: Comparison) -> None:
    """Holm-adjust every p-value of the comparison together, then label each row's change."""
    from statsmodels.stats.multitest import multipletests

    rows = [m for audit in comparison.audits.values() for m in audit.metrics]
    tested = [m for m in rows if m.p_value is not None]
    if tested:
        adjusted = multipletests([m.p_value for m in tested], alpha=ALPHA, method="holm")[1]
        for row, p in zip(tested, adjusted):
            row.p_holm = float(p)
    for row in rows:
        row.change = change_label(row.goal, row.a, row.b, row.p_holm)


def improvement(goal: Goal, a: float, b: float) -> float:
    """How much closer to ``goal`` the metric moved from ``a`` to ``b``, in the metric's units
    (negative: it moved away)."""
    if goal == "higher":
        return b - a
    if goal == "lower":
        return a - b
    return abs(a - float(goal)) - abs(b - float(goal))


def change_label(goal: Goal | None, a: float | None, b: float | None, p_holm: float | None) -> str:
    if goal is None or a is None or b is None or p_holm is None:
        return "unknown"
    if p_holm >= ALPHA:
        return "unchanged"
    step = improvement(goal, a, b)
    return "improved" if step > 0 else "regressed" if step < 0 else "unchanged"


# --- resampling ----------------------------------------------------------------------------------

class _PairedResampler:
    """The paired bootstrap and permutation test of one audit's metrics.

    Records are paired by position (``paired_a[i]`` and ``paired_b[i]`` are the same item). The
    bootstrap draws and the permutation swaps are drawn once per audit and shared by every metric
    and both paths, from a generator seeded by the comparison seed and the audit's name (so an
    audit's figures do not depend on which other audits are compared).
    """

    def __init__(self, audit: Audit, paired_a: list[dict[str, Any]], paired_b: list[dict[str, Any]],
                 keys: list[Key], *, seed: int, n_resamples: int, vectorise: bool):
        self.audit, self.a, self.b, self.keys = audit, paired_a, paired_b, keys
        labels = [audit.cluster(r) for r in paired_a]
        self.cluster_keys, self.cluster_of = np.unique(np.array(labels, dtype=str), return_inverse=True)
        k = len(self.cluster_keys)
        self.members = [np.flatnonzero(self.cluster_of == c) for c in range(k)]
        rng = np.random.default_rng([seed, zlib.crc32(audit.name.encode("utf-8"))])
        self.draws = rng.integers(0, k, size=(n_resamples, k))
        self.swaps = rng.random((n_resamples, k)) < 0.5
        self.vectorise = vectorise
        self._copies: dict[tuple[int, int, int], dict[str, Any]] = {}

    # -- the audit's metrics on record lists --

    def _values(self, records: list[dict[str, Any]]) -> dict[Key, float | None]:
        with point_estimates():
            table = self.audit.metrics(records, seed=0).groups
        out = {}
        for group, metric in self.keys:
            estimate = table.get(group, {}).get(metric)
            out[(group, metric)] = _finite(estimate.value) if estimate is not None else None
        return out

    def _resampled(self, side: int, draw: np.ndarray) -> list[dict[str, Any]]:
        """The records of the drawn clusters, in draw order. A cluster drawn k times appears k
        times, its later copies renamed (id, and any input equal to the cluster label), because
        audits key records by id or by their cluster (a series' origins): unrenamed copies would
        overwrite each other instead of counting twice."""
        records = self.a if side == 0 else self.b
        seen: dict[int, int] = {}
        out = []
        for c in draw.tolist():
            copy = seen.get(c, 0)
            seen[c] = copy + 1
            for i in self.members[c].tolist():
                if copy == 0:
                    out.append(records[i])
                else:
                    key = (side, i, copy)
                    if key not in self._copies:
                        self._copies[key] = _renamed(records[i], str(self.cluster_keys[c]), copy)
                    out.append(self._copies[key])
        return out

    def _swapped(self, swap: np.ndarray) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Both record lists with the swapped clusters' measurements exchanged."""
        per_record = swap[self.cluster_of]
        first = [rb if s else ra for ra, rb, s in zip(self.a, self.b, per_record.tolist())]
        second = [ra if s else rb for ra, rb, s in zip(self.a, self.b, per_record.tolist())]
        return first, second

    # -- the vectorised path for plain means --

    def _per_record(self, records: list[dict[str, Any]]) -> dict[Key, np.ndarray]:
        """Each metric of each record alone (NaN where the record does not count in it)."""
        out = {key: np.full(len(records), np.nan) for key in self.keys}
        for i, record in enumerate(records):
            for key, value in self._values([record]).items():
                if value is not None:
                    out[key][i] = value
        return out

    def fill(self, rows: list[MetricComparison]) -> None:
        observed_a, observed_b = self._values(self.a), self._values(self.b)
        n_draws = len(self.draws)
        boot = {key: (np.full(n_draws, np.nan), np.full(n_draws, np.nan)) for key in self.keys}
        perm = {key: (np.full(n_draws, np.nan), np.full(n_draws, np.nan)) for key in self.keys}
        per_record = (self._per_record(self.a), self._per_record(self.b))
        means = self._means(per_record, observed_a, observed_b, boot, perm)
        general = set(self.keys) - set(means) if self.vectorise else set(self.keys)
        if general:
            self._general(general, boot, perm)
        for row in rows:
            key = (row.group, row.metric)
            a, b = observed_a[key], observed_b[key]
            row.a, row.b = a, b
            if a is None or b is None:
                continue
            row.delta = b - a
            deltas = boot[key][1] - boot[key][0]
            deltas = deltas[~np.isnan(deltas)]
            if deltas.size:
                tail = (1 - CONFIDENCE) / 2 * 100
                low, high = np.percentile(deltas, [tail, 100 - tail])
                row.ci_low, row.ci_high = float(low), float(high)
            counts = self._mcnemar_counts(key, per_record) if key in means else None
            if counts is not None:
                row.test, row.p_value = "mcnemar", _mcnemar(*counts)
            else:
                row.test, row.p_value = "permutation", _permutation_p(row.delta, perm[key][1] - perm[key][0])
            if row.p_value is None:
                row.test = None

    def _means(self, per_record, observed_a, observed_b, boot, perm) -> set[Key]:
        """The metrics that are plain means of their per-record values: each must equal that mean
        on the paired records and on the first few resampled and permuted record lists. Their
        bootstrap and permutation values, computed as weighted means over all draws at once, go
        into ``boot`` and ``perm``."""
        if not self.keys:
            return set()
        k = len(self.cluster_keys)
        counts = np.zeros((len(self.draws), k))
        np.add.at(counts, (np.repeat(np.arange(len(self.draws)), k), self.draws.ravel()), 1)
        weights = counts[:, self.cluster_of]                  # draws x records: copies of each record
        swaps = self.swaps[:, self.cluster_of].astype(float)  # draws x records: 1 where A and B trade
        checks = min(MEAN_CHECK_DRAWS, len(self.draws))
        check_boot = [(self._values(self._resampled(0, self.draws[j])), self._values(self._resampled(1, self.draws[j])))
                      for j in range(checks)]
        check_perm = [tuple(self._values(side) for side in self._swapped(self.swaps[j])) for j in range(checks)]
        means = set()
        for key in self.keys:
            va, vb = per_record[0][key], per_record[1][key]
            da, db = (~np.isnan(va)).astype(float), (~np.isnan(vb)).astype(float)
            xa, xb = np.nan_to_num(va), np.nan_to_num(vb)
            boot_a, boot_b = _ratio(weights @ xa, weights @ da), _ratio(weights @ xb, weights @ db)
            shift, shift_n = swaps @ (xb - xa), swaps @ (db - da)
            perm_a = _ratio(xa.sum() + shift, da.sum() + shift_n)
            perm_b = _ratio(xb.sum() - shift, db.sum() - shift_n)
            exact = (_close(observed_a[key], _ratio(xa.sum(), da.sum()))
                     and _close(observed_b[key], _ratio(xb.sum(), db.sum()))
                     and all(_close(check_boot[j][0][key], boot_a[j]) and _close(check_boot[j][1][key], boot_b[j])
                             and _close(check_perm[j][0][key], perm_a[j]) and _close(check_perm[j][1][key], perm_b[j])
                             for j in range(checks)))
            if exact:
                means.add(key)
                boot[key], perm[key] = (boot_a, boot_b), (perm_a, perm_b)
        return means

    def _general(self, keys: set[Key], boot, perm) -> None:
        """Recompute the audit's metrics on every resampled and every permuted record list."""
        for j, (draw, swap) in enumerate(zip(self.draws, self.swaps)):
            sides = (self._values(self._resampled(0, draw)), self._values(self._resampled(1, draw)))
            swapped = tuple(self._values(records) for records in self._swapped(swap))
            for key in keys:
                for s in (0, 1):
                    boot[key][s][j] = _nan(sides[s][key])
                    perm[key][s][j] = _nan(swapped[s][key])

    def _mcnemar_counts(self, key: Key, per_record) -> tuple[int, int] | None:
        """Discordant pairs (A 1 -> B 0, A 0 -> B 1) over the records that count in the metric in
        both runs, when the metric is declared the mean of a 0/1 outcome field and the records'
        values are that field; None sends the metric to the permutation test."""
        field_name = self.audit.binary_outcomes.get(key[1])
        if field_name is None:
            return None
        va, vb = per_record[0][key], per_record[1][key]
        both = ~np.isnan(va) & ~np.isnan(vb)
        for values, records in ((va, self.a), (vb, self.b)):
            field_values = np.array([_as_float(r["outcome"].get(field_name)) for r in records])
            defined = ~np.isnan(values)
            if not (np.array_equal(values[defined], field_values[defined])
                    and np.isin(values[defined], (0.0, 1.0)).all()):
                return None
        return int(((va == 1) & (vb == 0) & both).sum()), int(((va == 0) & (vb == 1) & both).sum())


def _renamed(record: dict[str, Any], cluster: str, copy: int) -> dict[str, Any]:
    suffix = f"#copy{copy}"
    inputs = {k: (v + suffix if isinstance(v, str) and v == cluster else v) for k, v in record["inputs"].items()}
    return {**record, "id": f"{record['id']}{suffix}", "inputs": inputs}


def _mcnemar(a_only: int, b_only: int) -> float:
    """McNemar's test of the discordant pairs; exact (binomial) when there are few of them."""
    from statsmodels.stats.contingency_tables import mcnemar

    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    # The concordant cells do not enter the statistic; zeros keep the table valid.
    result = mcnemar([[0, a_only], [b_only, 0]], exact=discordant < EXACT_MCNEMAR_BELOW, correction=True)
    return float(min(1.0, result.pvalue))


def _permutation_p(delta: float, permuted: np.ndarray) -> float | None:
    permuted = permuted[~np.isnan(permuted)]
    if permuted.size == 0:
        return None
    observed = abs(delta)
    # A tolerance so that permutations equal to the observed delta up to rounding count as equal.
    at_least = int((np.abs(permuted) >= observed - 1e-12 * max(1.0, observed)).sum())
    return (1 + at_least) / (1 + permuted.size)


def _ratio(numerator: np.ndarray | float, denominator: np.ndarray | float) -> Any:
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def _close(value: float | None, vectorised: float) -> bool:
    if value is None or math.isnan(vectorised):
        return value is None and math.isnan(vectorised)
    return math.isclose(value, vectorised, rel_tol=1e-9, abs_tol=1e-12)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, str):
        return np.nan
    return float(value)

