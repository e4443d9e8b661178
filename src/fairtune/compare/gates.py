"""Gates: the changes a comparison must show (or must not show) for a tuned model to pass.

A gate names an audit, a metric (of the ``overall`` group unless ``group`` says otherwise) and one
rule, in the metric's own units:

- ``max_drop: x``        fails when the metric fell by more than ``x`` (``a - b > x``);
- ``max_rise: x``        fails when it rose by more than ``x`` (``b - a > x``);
- ``max_rise_pct: x``    fails when it rose by more than ``x`` percent of ``a``;
- ``min_improvement: x`` fails unless it moved at least ``x`` closer to the metric's goal
  (:attr:`~fairtune.audits.base.Audit.metric_goals`); a metric without a goal fails the gate;
- ``no_regression: true`` fails when the comparison labels the metric ``regressed`` (a
  significant move away from its goal after Holm's correction).

The first three are thresholds on the point estimates, so a gate bounds the size of a change
whether or not the change is significant; ``no_regression`` is the significance-based one.
A gate naming an audit, metric or group the comparison does not hold fails and says so: a typo
must not pass silently.

Gates come from a YAML (or JSON) file whose top level is ``gates: [...]``, or as a list of
mappings in Python (a recipe's ``gates``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from fairtune.compare.paired import OVERALL, Comparison, improvement
from fairtune.errors import from_validation

RULES = ("max_drop", "max_rise", "max_rise_pct", "min_improvement", "no_regression")
Threshold = Annotated[float, Field(strict=True, allow_inf_nan=False)]   # a number, not true or "0.1"


class Gate(BaseModel):
    """One gate: an audit's metric and exactly one rule."""

    model_config = ConfigDict(extra="forbid")

    audit: str
    metric: str
    group: str = OVERALL
    max_drop: Threshold | None = None
    max_rise: Threshold | None = None
    max_rise_pct: Threshold | None = None
    min_improvement: Threshold | None = None
    no_regression: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> Gate:
        given = [rule for rule in RULES if getattr(self, rule) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one rule of {', '.join(RULES)} (got {', '.join(given) or 'none'})")
        return self

    @property
    def rule(self) -> str:
        return next(rule for rule in RULES if getattr(self, rule) is not None)

    @property
    def threshold(self) -> float | None:
        value = getattr(self, self.rule)
        return None if self.rule == "no_regression" else float(value)


class GateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gates: list[Gate]


@dataclass
class GateResult:
    """A gate's verdict (one entry of comparison.json's ``gates``)."""

    audit: str
    metric: str
    rule: str
    threshold: float | None
    observed: float | None
    passed: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"audit": self.audit, "metric": self.metric, "rule": self.rule, "threshold": self.threshold,
                "observed": self.observed, "passed": self.passed, "message": self.message}


def load_gates(source: str | Path | Sequence[Mapping[str, Any] | Gate] | Mapping[str, Any]) -> list[Gate]:
    """Gates from a YAML/JSON file (top level ``gates: [...]``), from a mapping of the same shape,
    or from a list of gate mappings. A bad gate raises an InputError naming the file (if any)
    and the key, e.g. ``gates.0.max_dorp`` (``0.max_dorp`` for a bare list)."""
    if isinstance(source, (str, Path)):
        from fairtune.readers import read_mapping

        try:
            return GateFile.model_validate(read_mapping(source)).gates
        except ValidationError as exc:
            raise from_validation(exc, file=source) from None
    try:
        if isinstance(source, Mapping):
            return GateFile.model_validate(source).gates
        return TypeAdapter(list[Gate]).validate_python(
            [g.model_dump(exclude_none=True) if isinstance(g, Gate) else g for g in source])
    except ValidationError as exc:
        raise from_validation(exc, file=None) from None


def evaluate_gates(comparison: Comparison, gates: Sequence[Gate | Mapping[str, Any]] | str | Path
                   ) -> list[GateResult]:
    """Apply ``gates`` to ``comparison``: its ``gates`` become their results (and its ``passed``
    follows from them). Returns the results."""
    comparison.gates = [evaluate_gate(comparison, gate) for gate in load_gates(gates)]
    return comparison.gates


def evaluate_gate(comparison: Comparison, gate: Gate) -> GateResult:
    where = f"{gate.audit} {gate.metric}" + ("" if gate.group == OVERALL else f" [{gate.group}]")

    def result(passed: bool, message: str, observed: float | None = None) -> GateResult:
        return GateResult(gate.audit, gate.metric, gate.rule, gate.threshold, observed, passed,
                          f"{where}: {message}")

    audit = comparison.audits.get(gate.audit)
    if audit is None:
        side = ("only in run A" if gate.audit in comparison.only_in_a else
                "only in run B" if gate.audit in comparison.only_in_b else "in neither run")
        return result(False, f"audit '{gate.audit}' is {side}, so it was not compared")
    row = audit.row(gate.metric, gate.group)
    if row is None:
        compared = sorted({m.metric for m in audit.metrics if m.group == gate.group})
        if not compared:
            hint = " (compare with --groups to compare groups)" if gate.group != OVERALL else ""
            return result(False, f"group '{gate.group}' was not compared{hint}")
        return result(False, f"metric '{gate.metric}' was not compared (compared: {', '.join(compared)})")
    if row.a is None or row.b is None:
        missing = " and ".join(side for side, value in (("A", row.a), ("B", row.b)) if value is None)
        return result(False, f"no value in run {missing} (on {audit.n_paired} paired records)")
    a, b = row.a, row.b
    moved = f"{a:.4g} -> {b:.4g}"
    if gate.rule == "max_drop":
        drop = a - b
        return result(drop <= gate.max_drop, f"fell by {drop:.4g} ({moved}); max_drop {gate.max_drop:g}", drop)
    if gate.rule == "max_rise":
        rise = b - a
        return result(rise <= gate.max_rise, f"rose by {rise:.4g} ({moved}); max_rise {gate.max_rise:g}", rise)
    if gate.rule == "max_rise_pct":
        if a == 0:
            return result(b <= 0, f"{moved}: a rise from 0 has no percentage; max_rise_pct {gate.max_rise_pct:g} "
                                  f"{'holds' if b <= 0 else 'fails'}")
        pct = (b - a) / abs(a) * 100
        return result(pct <= gate.max_rise_pct, f"rose by {pct:.3g}% ({moved}); max_rise_pct {gate.max_rise_pct:g}",
                      pct)
    if gate.rule == "min_improvement":
        if row.goal is None:
            return result(False, f"the metric has no goal, so improvement is undefined ({moved})")
        step = improvement(row.goal, a, b)
        return result(step >= gate.min_improvement,
                      f"moved {step:.4g} towards its goal {row.goal} ({moved}); "
                      f"min_improvement {gate.min_improvement:g}",
                      step)
    p = "n/a" if row.p_holm is None else f"{row.p_holm:.3g}"
    return result(row.change != "regressed", f"{row.change} ({moved}, Holm p {p})", row.delta)
