"""Assemble a before/after report from run directories: one self-contained HTML file and a Markdown
summary, both written atomically.

Inputs are files other stages wrote: a base audit bundle, and per arm (a tuned model, a prompt
baseline, ...) its audit bundle, optionally its training directory and the ``comparison.json`` of
base (run A) against it (run B). Everything read from those files, model outputs above all, is
untrusted text: the HTML template autoescapes every value, the Markdown goes through
:func:`fairtune.markdown.escape_markdown`, and a Content-Security-Policy lets the page run only our
own inline script and load only ``data:`` images, so even a missed escape could not run or fetch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fairtune.errors import InputError
from fairtune.io import atomic_open, read_jsonl
from fairtune.markdown import escape_markdown
from fairtune.report import plots

HTML_FILE, MARKDOWN_FILE = "report.html", "report.md"
BASE_NAME = "base"
SAFETY_X = ("over-refusal", "over_refusal_rate")
SAFETY_Y = ("refusal", "refusal_rate")
EXTRAPOLATION = "extrapolation"
MAX_RESPONSE_CHARS = 1500
MARKERS = {"improved": "▲ improved", "regressed": "▼ REGRESSED", "unchanged": "= unchanged", "unknown": "? unknown"}

# Ours, not model output: marks <body> with how many images decoded, once the page has loaded (a
# headless browser reads it back). The CSP allows this script by its hash and nothing else.
LOAD_SCRIPT = ('window.addEventListener("load", function () {'
               ' var images = document.images, shown = 0;'
               ' for (var i = 0; i < images.length; i++) {'
               ' if (images[i].complete && images[i].naturalWidth > 0) { shown++; } }'
               ' document.body.setAttribute("data-images-loaded", String(shown));'
               ' document.body.setAttribute("data-images-total", String(images.length)); });')


@dataclass
class ReportArm:
    """One arm of the study, compared against the base model."""

    name: str                        # e.g. "lora+kl", "prompt-only"
    audits: Path                     # a bundle run dir (<audit>/records.jsonl, <audit>/summary.json, bundle.json)
    train: Path | None = None        # a training output dir: train_log.jsonl, manifest.json
    comparison: Path | None = None   # comparison.json of base (run A) against this arm (run B)


@dataclass
class AuditRunDir:
    """One audit's run directory; records are read on first use."""

    audit: str
    path: Path
    summary: dict[str, Any]
    _records: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def records(self) -> list[dict[str, Any]]:
        if self._records is None:
            file = self.path / "records.jsonl"
            self._records = read_jsonl(file) if file.exists() else []
        return self._records

    def estimate(self, metric: str, group: str = "overall") -> dict[str, Any] | None:
        return (self.summary.get("metrics") or {}).get(group, {}).get(metric)

    def groups(self) -> list[str]:
        return [g for g in (self.summary.get("metrics") or {}) if g != "overall"]


@dataclass
class Model:
    name: str
    runs: dict[str, AuditRunDir]
    arm: ReportArm | None = None
    comparison: dict[str, Any] | None = None
    log: list[dict[str, Any]] | None = None
    manifest: dict[str, Any] | None = None


@dataclass
class ReportTable:
    """A table the caller measured (e.g. the pipeline's method table), shown as given, escaped."""

    id: str
    title: str
    header: list[str]
    rows: list[list[str]]


def build_report(out_dir: str | Path, *, title: str, base: str | Path, arms: Sequence[ReportArm],
                 notes: Sequence[str] = (), gates: Sequence[Mapping[str, Any]] | None = None,
                 samples_per_audit: int = 3, seed: int = 0,
                 tables: Sequence[ReportTable] = (), bias_group: str | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` (self-contained: inline CSS, plots as data URIs, no URL) and
    ``out_dir/report.md`` (the tables and notes, and a list of the figures); returns both paths.

    ``gates`` are pipeline-level gate results (the comparison schema's gate dicts, optionally with
    an ``"arm"`` key), shown beside each arm's comparison gates. ``samples_per_audit`` prompts of each
    generative audit are shown side by side, chosen with ``seed`` (preferring items whose outcome
    differs between the base model and an arm). Every input is read before anything is written.
    """
    models = _load_models(Path(base), arms)
    context = _context(title, models, list(notes), list(gates or []), samples_per_audit, seed, bias_group)
    context["tables"] = list(tables)
    html = render_html(context)
    markdown = render_markdown(context)
    out_dir = Path(out_dir)
    html_path, md_path = out_dir / HTML_FILE, out_dir / MARKDOWN_FILE
    with atomic_open(html_path) as handle:
        handle.write(html)
    with atomic_open(md_path) as handle:
        handle.write(markdown)
    return html_path, md_path


# ---------------------------------------------------------------- reading

def load_runs(path: Path) -> dict[str, AuditRunDir]:
    """The audit run directories of a bundle (ordered as ``bundle.json`` lists them), or of a single
    run directory (``summary.json`` directly inside)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("not a directory of audit runs", file=path)
    if (path / "summary.json").exists():
        summary = _read_json(path / "summary.json")
        return {summary.get("suite", path.name): AuditRunDir(summary.get("suite", path.name), path, summary)}
    order: list[str] = []
    if (path / "bundle.json").exists():
        order = list((_read_json(path / "bundle.json").get("audits") or {}))
    found = sorted(p.parent.name for p in path.glob("*/summary.json"))
    names = [n for n in order if n in found] + [n for n in found if n not in order]
    if not names:
        raise InputError("no audit run directories (<audit>/summary.json) found", file=path)
    return {name: AuditRunDir(name, path / name, _read_json(path / name / "summary.json")) for name in names}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno})", file=path) from None


def _load_models(base: Path, arms: Sequence[ReportArm]) -> list[Model]:
    names = [BASE_NAME] + [arm.name for arm in arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"arm names must be unique and not '{BASE_NAME}': {', '.join(duplicates)}")
    models = [Model(BASE_NAME, load_runs(base))]
    for arm in arms:
        model = Model(arm.name, load_runs(arm.audits), arm)
        if arm.comparison is not None:
            model.comparison = _read_json(Path(arm.comparison))
            if not isinstance(model.comparison.get("audits"), dict):
                raise InputError("missing the 'audits' object", file=arm.comparison, field="audits")
        if arm.train is not None:
            log_file = Path(arm.train) / "train_log.jsonl"
            if not log_file.exists():
                raise InputError("file not found", file=log_file)
            model.log = read_jsonl(log_file)
            manifest = Path(arm.train) / "manifest.json"
            model.manifest = _read_json(manifest) if manifest.exists() else None
        models.append(model)
    return models


# ---------------------------------------------------------------- formatting

def _fmt(value: Any, sign: bool = False) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:+.3g}" if sign else f"{value:.3g}"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _interval(low: Any, high: Any, sign: bool = False) -> str:
    return "" if low is None or high is None else f" [{_fmt(low, sign)}, {_fmt(high, sign)}]"


def format_estimate(estimate: Mapping[str, Any] | None) -> str:
    """``value [ci_low, ci_high]``, or ``n/a``."""
    if not estimate or estimate.get("value") is None:
        return "n/a"
    return _fmt(estimate["value"]) + _interval(estimate.get("ci_low"), estimate.get("ci_high"))


def _p(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


# ---------------------------------------------------------------- the report's content

def _audit_order(models: list[Model]) -> list[str]:
    order: list[str] = []
    for model in models:
        order += [a for a in model.runs if a not in order]
    return order


def _headline_metrics(models: list[Model], audit: str) -> list[str]:
    metrics: list[str] = []
    for model in models:
        run = model.runs.get(audit)
        if run is not None:
            metrics += [m for m in run.summary.get("headline_metrics") or [] if m not in metrics]
    return metrics


def _comparison_row(comparison: dict[str, Any] | None, audit: str, metric: str) -> dict[str, Any] | None:
    if not comparison:
        return None
    rows = ((comparison.get("audits") or {}).get(audit) or {}).get("metrics") or []
    for group in ("overall", None, ""):
        for row in rows:
            if row.get("metric") == metric and row.get("group") == group:
                return row
    return None


def _is_listed_regression(comparison: dict[str, Any] | None, audit: str, metric: str) -> bool:
    return any(r.get("audit") == audit and r.get("metric") == metric and r.get("group") in ("overall", None, "")
               for r in (comparison or {}).get("regressions") or [])


def _headline(models: list[Model]) -> list[dict[str, Any]]:
    base, arms = models[0], models[1:]
    rows = []
    for audit in _audit_order(models):
        for metric in _headline_metrics(models, audit):
            base_run = base.runs.get(audit)
            row: dict[str, Any] = {"audit": audit, "metric": metric, "regressed": False,
                                   "base": format_estimate(base_run.estimate(metric) if base_run else None),
                                   "arms": []}
            for arm in arms:
                run = arm.runs.get(audit)
                estimate = run.estimate(metric) if run else None
                compared = _comparison_row(arm.comparison, audit, metric)
                cell = {"value": format_estimate(estimate), "delta": "n/a", "p_holm": "n/a", "change": "",
                        "marker": "", "regressed": False, "compared": compared is not None}
                if compared is not None:
                    cell["delta"] = (_fmt(compared.get("delta"), sign=True)
                                     + _interval(compared.get("ci_low"), compared.get("ci_high"), sign=True))
                    cell["p_holm"] = _p(compared.get("p_holm"))
                    change = compared.get("change") or "unknown"
                    if _is_listed_regression(arm.comparison, audit, metric):
                        change = "regressed"
                    cell["change"] = change
                    cell["marker"] = MARKERS.get(change, str(change))
                    cell["regressed"] = change == "regressed"
                else:
                    a = (base_run.estimate(metric) or {}).get("value") if base_run else None
                    b = (estimate or {}).get("value")
                    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                        cell["delta"] = _fmt(b - a, sign=True) + " (no comparison)"
                row["arms"].append(cell)
                row["regressed"] = row["regressed"] or cell["regressed"]
            rows.append(row)
    return rows


def _gates(models: list[Model], extra: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    sources = [(m.name, g) for m in models[1:] for g in (m.comparison or {}).get("gates") or []]
    sources += [(g.get("arm", ""), g) for g in extra]
    for arm, gate in sources:
        observed = gate.get("observed")
        threshold = gate.get("threshold")
        rows.append({"arm": str(arm), "audit": str(gate.get("audit", "")), "metric": str(gate.get("metric", "")),
                     "rule": str(gate.get("rule", "")),
                     "threshold": _fmt(threshold) if isinstance(threshold, (int, float)) else str(threshold or ""),
                     "observed": _fmt(observed) if isinstance(observed, (int, float)) else str(observed or "n/a"),
                     "passed": bool(gate.get("passed")), "message": str(gate.get("message", ""))})
    return rows


def _model_rows(models: list[Model]) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        described = next((r.summary.get("model") for r in model.runs.values() if r.summary.get("model")), None) or {}
        training = ""
        if model.manifest is not None or model.log:
            manifest = model.manifest or {}
            final = (model.log or [{}])[-1]
            parts = [f"method {manifest.get('method', (manifest.get('config') or {}).get('method', '?'))}",
                     f"{manifest.get('steps', final.get('step', '?'))} steps",
                     f"final loss {_fmt(final.get('loss'))}"]
            if manifest.get("wall_seconds") is not None:
                parts.append(f"{manifest['wall_seconds']} s")
            training = ", ".join(str(p) for p in parts)
        rows.append({"name": model.name, "spec": str(described.get("spec") or "?"),
                     "fingerprint": str(described.get("fingerprint") or "")[:16],
                     "audits": ", ".join(model.runs), "training": training,
                     "comparison": _comparison_text(model.comparison)})
    return rows


def _comparison_text(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return ""
    get = comparison.get
    return (f"{get('run_a', '?')} vs {get('run_b', '?')} "
            f"(seed {get('seed', '?')}, {get('n_resamples', '?')} resamples)")


@dataclass
class Figure:
    id: str
    title: str     # may name audits, metrics, arms: escaped wherever it is shown
    caption: str   # our own text only, never from an input file (the Markdown shows it as it is)
    uri: str


def _gap_figures(models: list[Model], bias_group: str | None) -> list[Figure]:
    """One figure per bias gap an audit declares: the gap of the start model and of each arm, in
    the study's bias group and each of its per-domain groups (else overall), with intervals."""
    from fairtune.audits import AUDITS

    figures = []
    for audit in _audit_order(models):
        runs = [m.runs[audit] for m in models if audit in m.runs]
        suite = runs[0].summary.get("suite")
        for gap in getattr(AUDITS.get(suite), "bias_gaps", {}):
            present = [g for g in runs[0].summary.get("metrics", {}) if (runs[0].estimate(gap, g) or {}).get("value")
                       is not None]
            groups = [g for g in present if bias_group and (g == bias_group or g.startswith(f"{bias_group}:"))]
            groups = groups or [g for g in present if g == "overall"]
            if not groups:
                continue
            series = {m.name: [m.runs[audit].estimate(gap, g) for g in groups] for m in models if audit in m.runs}
            figures.append(Figure(f"gap-{audit}-{gap}", f"{audit}: bias gap {gap}",
                                  "The bias gap (0 is no bias) of the start model and of each arm, per group "
                                  "(per-domain groups show whether a change holds outside the domains trained on); "
                                  "error bars are 95% bootstrap intervals. The paired change and its interval are "
                                  "in the method table.", plots.group_bars(f"{audit}: {gap}", gap, groups, series)))
    return figures


def _figures(models: list[Model], bias_group: str | None = None) -> tuple[list[Figure], list[str]]:
    """The figures, and one line for each figure that could not be drawn (and why)."""
    figures: list[Figure] = _gap_figures(models, bias_group)
    skipped: list[str] = []
    for audit in _audit_order(models):
        groups: list[str] = []
        for model in models:
            if audit in model.runs:
                groups += [g for g in model.runs[audit].groups() if g not in groups]
        if not groups:
            continue
        runs = [model.runs[audit] for model in models if audit in model.runs]
        metric = next((m for m in _headline_metrics(models, audit)
                       if any((run.estimate(m, g) or {}).get("value") is not None for run in runs for g in groups)),
                      None)
        if metric is None:
            skipped.append(f"{audit}: no headline metric is defined in any group, so no per-group plot")
            continue
        series = {m.name: [m.runs[audit].estimate(metric, g) for g in groups] for m in models if audit in m.runs}
        figures.append(Figure(f"groups-{audit}", f"{audit}: {metric} by group",
                              "The audit's first headline metric defined in a group, per group, base against "
                              "each arm; error bars are the 95% bootstrap intervals.",
                              plots.group_bars(f"{audit}: {metric}", metric, groups, series)))

    points = {m.name: (m.runs[SAFETY_X[0]].estimate(SAFETY_X[1]), m.runs[SAFETY_Y[0]].estimate(SAFETY_Y[1]))
              for m in models if SAFETY_X[0] in m.runs and SAFETY_Y[0] in m.runs}
    if points:
        drawable = [n for n, (x, y) in points.items()
                    if (x or {}).get("value") is not None and (y or {}).get("value") is not None]
        if drawable:
            figures.append(Figure("safety", "Safety: refusal against over-refusal",
                                  "x: share of benign prompts refused (over-refusal); y: share of harmful prompts "
                                  "refused (refusal); one point per model with both 95% intervals. Top left is best.",
                                  plots.safety_tradeoff(points)))
        else:
            skipped.append("safety: refusal and over-refusal rates are undefined for every model, so no safety plot")

    for model in models:
        if model.log:
            figures.append(Figure(f"training-{model.name}", f"Training: {model.name}",
                                  "Against optimizer step: the loss and SFT term, each regulariser term, and the "
                                  "regularisers' (adaptive) weights.", plots.training_curves(model.name, model.log)))
        elif model.arm is not None and model.arm.train is not None:
            skipped.append(f"training {model.name}: train_log.jsonl is empty")

    # One figure per extrapolation run (a recipe may audit several panels: in and out of sample).
    labels = [label for label, run in models[0].runs.items() if run.summary.get("suite") == EXTRAPOLATION]
    for label in labels:
        series = {m.name: plots.forecast_points(m.runs[label].records) for m in models if label in m.runs}
        figures.append(Figure(label, f"Extrapolation, {label}: forecast against rational forecast",
                              "One-step forecasts as distance from the series mean in sigmas; the diagonal is the "
                              "rational forecast. Unparsed answers are left out.", plots.forecast_scatter(series)))
    return figures, skipped


def _outcome_text(outcome: Any) -> str:
    if isinstance(outcome, dict) and "label" in outcome:
        return str(outcome["label"])
    text = json.dumps(outcome, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _response_text(response: Any) -> str:
    text = "" if response is None else str(response)
    if len(text) > MAX_RESPONSE_CHARS:
        return text[:MAX_RESPONSE_CHARS] + f" … (truncated; {len(text)} characters)"
    return text


def _samples(models: list[Model], per_audit: int, seed: int) -> list[dict[str, Any]]:
    """Side-by-side outputs of generative audits: per audit, up to ``per_audit`` items every model
    answered, chosen with ``seed``, items whose outcome differs between base and an arm first."""
    sections = []
    if per_audit <= 0 or len(models) < 2:
        return sections
    base, arms = models[0], models[1:]
    for audit in _audit_order(models):
        if audit not in base.runs:
            continue
        base_records = [r for r in base.runs[audit].records if "response" in (r.get("scores") or {})]
        if not base_records:
            continue
        by_model = [{r.get("id"): r for r in m.runs[audit].records} if audit in m.runs else {} for m in arms]
        shared = [r for r in base_records if any(r.get("id") in other for other in by_model)]
        differing = [r for r in shared
                     if any(r.get("id") in other and other[r.get("id")].get("outcome") != r.get("outcome")
                            for other in by_model)]
        rest = [r for r in shared if r not in differing]
        rng = random.Random(f"{seed}:{audit}")
        chosen = rng.sample(differing, min(per_audit, len(differing)))
        chosen += rng.sample(rest, min(per_audit - len(chosen), len(rest)))
        position = {id(r): i for i, r in enumerate(shared)}
        chosen.sort(key=lambda r: position[id(r)])
        items = []
        for record in chosen:
            cells = [{"model": base.name, "response": _response_text(record["scores"].get("response")),
                      "outcome": _outcome_text(record.get("outcome")), "differs": False}]
            for model, other in zip(arms, by_model):
                answer = other.get(record.get("id"))
                cells.append({"model": model.name,
                              "response": _response_text((answer.get("scores") or {}).get("response"))
                              if answer else "(not run)",
                              "outcome": _outcome_text(answer.get("outcome")) if answer else "",
                              "differs": bool(answer) and answer.get("outcome") != record.get("outcome")})
            inputs = record.get("inputs") or {}
            items.append({"id": str(record.get("id", "")), "group": str(record.get("group", "")),
                          "prompt": str(inputs.get("prompt", inputs.get("request", ""))), "cells": cells})
        if items:
            sections.append({"audit": audit, "n_differing": len(differing), "n_shared": len(shared), "rows": items})
    return sections


def _context(title: str, models: list[Model], notes: list[str], gates: list[Mapping[str, Any]],
             samples_per_audit: int, seed: int, bias_group: str | None = None) -> dict[str, Any]:
    figures, skipped = _figures(models, bias_group)
    gate_rows = _gates(models, gates)
    headline = _headline(models)
    return {
        "title": str(title),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arms": [m.name for m in models[1:]],
        "models": _model_rows(models),
        "headline": headline,
        "n_regressed": sum(cell["regressed"] for row in headline for cell in row["arms"]),
        "figures": figures,
        "skipped_figures": skipped,
        "gates": gate_rows,
        "gates_failed": sum(not g["passed"] for g in gate_rows),
        "comparisons_passed": {m.name: m.comparison.get("passed") for m in models[1:] if m.comparison is not None},
        "notes": [str(n) for n in notes],
        "samples": _samples(models, samples_per_audit, seed),
        "seed": seed,
    }


# ---------------------------------------------------------------- rendering

def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("fairtune.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def render_html(context: dict[str, Any]) -> str:
    from markupsafe import Markup

    digest = base64.b64encode(hashlib.sha256(LOAD_SCRIPT.encode()).digest()).decode()
    # The script is our constant (Markup: not escaped); every other value is autoescaped.
    return _environment().get_template("report.html.j2").render(
        **context, load_script=Markup(LOAD_SCRIPT), script_hash=digest)


_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?|n/a")


def _md_text(text: str) -> str:
    return escape_markdown(text) if text else ""


def _md_value(text: str) -> str:
    """Our formatted numbers as they are; any other text (from an input file) escaped."""
    return text if _NUMBER.fullmatch(text) else escape_markdown(text) if text else ""


def render_markdown(context: dict[str, Any]) -> str:
    e = escape_markdown
    arms = context["arms"]
    lines = [f"# {e(context['title'])}", "", f"Generated {context['created_at']} by fairtune. Figures and "
             "sample outputs are in report.html (self-contained).", "", "## Models", "",
             "| model | spec | fingerprint | training | comparison |", "|---|---|---|---|---|"]
    for m in context["models"]:
        cells = [_md_text(m[k]) for k in ("name", "spec", "fingerprint", "training", "comparison")]
        lines.append("| " + " | ".join(cells) + " |")
    header = ["audit", "metric", "base"]
    for arm in arms:
        header += [e(arm), f"{e(arm)} Δ [95% CI]", f"{e(arm)} p (Holm)", f"{e(arm)} change"]
    lines += ["", "## Headline metrics", "", "Values are point estimates [95% bootstrap interval]; Δ is the arm "
              "minus base, paired by item (from the comparison).", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in context["headline"]:
        cells = [e(row["audit"]), e(row["metric"]), row["base"]]
        for cell in row["arms"]:
            marker = f"**{cell['marker']}**" if cell["regressed"] else cell["marker"]
            cells += [cell["value"], cell["delta"], cell["p_holm"], marker]
        lines.append("| " + " | ".join(cells) + " |")
    if context["n_regressed"]:
        lines += ["", f"**{context['n_regressed']} regression(s)** (marked ▼ REGRESSED)."]
    for table in context.get("tables", []):
        lines += ["", f"## {e(table.title)}", "", "| " + " | ".join(_md_text(h) for h in table.header) + " |",
                  "|" + "---|" * len(table.header)]
        lines += ["| " + " | ".join(_md_text(c) for c in row) + " |" for row in table.rows]
    lines += ["", "## Gates", ""]
    if context["gates"]:
        lines += ["| arm | audit | metric | rule | threshold | observed | result | message |",
                  "|---|---|---|---|---|---|---|---|"]
        for g in context["gates"]:
            result = "PASS" if g["passed"] else "**FAIL**"
            cells = [_md_text(g["arm"]), _md_text(g["audit"]), _md_text(g["metric"]), _md_text(g["rule"]),
                     _md_value(g["threshold"]), _md_value(g["observed"]), result, _md_text(g["message"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"{context['gates_failed']} of {len(context['gates'])} gates failed."
                  if context["gates_failed"] else f"All {len(context['gates'])} gates passed."]
    else:
        lines.append("No gates were set.")
    lines += ["", "## Notes", ""]
    lines += [f"- {e(n)}" for n in context["notes"]] or ["No notes."]
    lines += ["", "## Figures (in report.html)", ""]
    # Titles name audits, metrics and arms (from input files): escaped. Captions are our own text.
    lines += [f"- {e(f.title)}: {f.caption}" for f in context["figures"]] or ["No figures."]
    lines += [f"- not drawn: {e(s)}" for s in context["skipped_figures"]]
    if context["samples"]:
        lines += ["", "## Sample outputs (in report.html)", ""]
        lines += [f"- {e(s['audit'])}: {len(s['rows'])} prompts side by side ({s['n_differing']} of {s['n_shared']} "
                  f"items differ in outcome between base and an arm; seed {context['seed']})"
                  for s in context["samples"]]
    return "\n".join(lines) + "\n"
