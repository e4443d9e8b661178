"""``fairtune run``: one command from "here is my model" to "here is the evidence".

Stages, each cached (:mod:`fairtune.pipeline.stages`) under ``out/``::

    base/audits/<audit>/          the recipe's audits and red-team audits on the base model
    aligned/audits/<audit>/       the same on the aligned model, when the recipe aligned it
    data/<n>-<builder>/           each data builder's output (train.jsonl, data_card.*)
    arms/<arm>/train/             adapter/, merged/, train_log.jsonl, manifest.json
    arms/<arm>/audits/<audit>/    the audits and red-team audits on the tuned model
    arms/<arm>/compare/           comparison.json / .md against the starting model
    report/                       report.html, report.md
    pipeline.json, methods.md     what ran, notes, gates, and the measured method table

The starting model of every arm is the base model, or its aligned version when the recipe asks
for guardrails first (``align.when: auto`` aligns when the base refuses less than
``align.min_refusal`` of the harmful suite); the report says which.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairtune.io import atomic_open, write_json
from fairtune.pipeline.recipe import AuditEntry, Recipe
from fairtune.pipeline.stages import run_stage, stage_info, stage_key

PIPELINE_FILE, METHODS_FILE = "pipeline.json", "methods.md"
METHODS_TITLE = "Methods, measured"


@dataclass
class PipelineResult:
    out_dir: Path
    summary: dict[str, Any]
    passed: bool
    failed_gates: list[dict[str, Any]] = field(default_factory=list)


def _validate_audit_data(entries: list[AuditEntry]) -> None:
    """Load every audit's items now: bad benchmark files fail before any model loads."""
    from fairtune.audits import AuditOptions, get_audit

    for entry in entries:
        get_audit(entry.suite).load(Path(entry.data) if entry.data else None, AuditOptions())


def _data_key(entry: AuditEntry) -> Any:
    from fairtune.io import sha256_file

    if entry.data and Path(entry.data).is_file():
        return sha256_file(entry.data)
    return entry.data


class _Models:
    """Loads each model once, on first use (a cached stage never loads it)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    def get(self, spec: str) -> Any:
        from fairtune.models import load_model

        if spec not in self._loaded:
            self._loaded.clear()          # one model in memory at a time
            self._loaded[spec] = load_model(spec)
        return self._loaded[spec]


def _audit_all(root: Path, entries: list[AuditEntry], model: str, model_key: str, recipe: Recipe,
               models: _Models, log: Callable[[str], None], progress: bool, shared: Path | None = None) -> Path:
    """Audit ``model`` with every entry into ``root/<label>``. With ``shared``, each audit is built
    once in ``shared/<key>`` and copied from there: the aligned model's audits live beside the
    cached aligned model, so every recipe and run directory that starts from it reuses them."""
    import shutil

    from fairtune.runner import run_audit

    for entry in entries:
        key = stage_key(model_key, entry.key(), _data_key(entry), recipe.seed)
        label = f"{root.parent.name}/{entry.label}"
        build = lambda d, e=entry: run_audit(  # noqa: E731
            e.suite, model=models.get(model), data=e.data, out=d, force=True, seed=recipe.seed,
            max_new_tokens=e.max_new_tokens, progress=progress, bundle=e.bundle)
        if shared is not None:
            source = run_stage(shared / key, key, build, log, label=f"{label} (kept with the model)")
            build = lambda d, source=source: shutil.copytree(source, d, dirs_exist_ok=True)  # noqa: E731
        run_stage(root / entry.label, key, build, log, label=label)
    index = {"bundle": f"recipe:{recipe.name}", "audits": {}}
    for entry in entries:
        summary = json.loads((root / entry.label / "summary.json").read_text())
        index["audits"][entry.label] = {"suite": entry.suite, "n_items": summary["n_items"],
                                        "headline": {m: summary["metrics"]["overall"].get(m)
                                                     for m in summary["headline_metrics"]}}
    write_json(root / "bundle.json", index)
    return root


def _refusal_rate(audits_dir: Path, recipe: Recipe) -> float | None:
    entry = next(a for a in recipe.audits if a.suite == "refusal")
    summary = json.loads((audits_dir / entry.label / "summary.json").read_text())
    return summary["metrics"]["overall"]["refusal_rate"]["value"]


def run_recipe(recipe: Recipe, *, out: str | Path, progress: bool = False,
               log: Callable[[str], None] = lambda _: None) -> PipelineResult:
    """Run (or resume) ``recipe`` into ``out``; see the module docstring for the layout."""
    from fairtune.curation import api
    from fairtune.training.align import align, model_fingerprint
    from fairtune.training.config import load_config

    started = time.perf_counter()
    entries = [*recipe.audits, *recipe.redteam]
    _validate_audit_data(entries)
    base_key = stage_key("model", model_fingerprint(recipe.model))   # an unknown model fails here
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = _Models()
    notes: list[str] = []

    # Aligning makes the aligned model every arm's start: with base_audits "refusal" the base model
    # is audited with what decides alignment first, and with the rest only if it stays the start.
    first = entries
    if recipe.align.when != "never" and recipe.align.base_audits == "refusal":
        first = [e for e in entries if e.suite == "refusal"]
    base_audits = _audit_all(out / "base" / "audits", first, recipe.model, base_key, recipe, models, log, progress)
    start_model, start_key, start_audits = recipe.model, base_key, base_audits
    refusal = _refusal_rate(base_audits, recipe) if recipe.align.when == "auto" else None
    # No judged reply at all (every reply empty or degenerate) is no evidence of guardrails either.
    if recipe.align.when == "always" or (recipe.align.when == "auto"
                                         and (refusal is None or refusal < recipe.align.min_refusal)):
        log("align: building or reusing the aligned model")
        aligned = align(recipe.model, helpful_weight=recipe.align.helpful_weight, epochs=recipe.align.epochs,
                        lr=recipe.align.lr, refusal_unlikelihood=recipe.align.refusal_unlikelihood, seed=recipe.seed,
                        progress=progress)
        start_model, start_key = str(aligned.merged_dir), stage_key("aligned", aligned.run_dir.name)
        start_audits = _audit_all(out / "aligned" / "audits", entries, start_model, start_key, recipe, models,
                                  log, progress, shared=aligned.run_dir / "audits")
        if recipe.align.when == "always":
            why = "the recipe asks for it"
        elif refusal is None:
            why = "the base model gave no judgeable reply to the harmful suite"
        else:
            why = (f"the base model refused {refusal:.1%} of the harmful suite, under the recipe's "
                   f"{recipe.align.min_refusal:.0%}")
        notes.append(f"Safety alignment first: {why}, so `fairtune align` gave it guardrails (cached as "
                     f"{aligned.run_dir.name}); every arm starts from the aligned model and is compared with it.")
    elif first is not entries:
        base_audits = _audit_all(out / "base" / "audits", entries, recipe.model, base_key, recipe, models, log,
                                 progress)
        start_audits = base_audits

    steps: dict[str, tuple[str, str]] = {}     # data step name -> (train.jsonl, stage key)
    for index, (step, label) in enumerate(zip(recipe.data, recipe.data_labels())):
        content = api.content_key(step.builder, step.args)
        key = stage_key(step.model_dump(exclude_none=True), recipe.seed, _files_key(step.args),
                        *([content] if content is not None else []))   # keys of other builders unchanged
        target = run_stage(out / "data" / label, key, lambda d, s=step: _build_data(
            api, s, d, recipe.seed, start_model), log, label=f"data/{label}")
        steps[label] = (str(target / "train.jsonl"), key)
        notes.append(_guard_note(label, target))

    arms: dict[str, dict[str, Any]] = {}
    for arm in recipe.arms:
        arm_dir = out / "arms" / arm.name
        chosen = [steps[name] for name in (arm.data or steps)]
        train_files, data_key = [file for file, _ in chosen], stage_key(recipe.seed)
        for _, key in chosen:
            data_key = stage_key(data_key, key)
        train_key = stage_key(start_key, data_key, arm.train, recipe.seed)
        is_prompt = arm.train.get("method", {}).get("name") == "prompt"

        def build_train(d: Path, arm=arm, is_prompt=is_prompt, train_files=train_files) -> None:
            config = {**arm.train, "model": start_model, "data": [] if is_prompt else train_files, "out": str(d),
                      "seed": recipe.seed}
            load_config(config)                  # fails here, in one line, before a process starts
            _train_in_child(config, progress)

        train_dir = run_stage(arm_dir / "train", train_key, build_train, log, label=f"{arm.name}/train")
        tuned_key = stage_key("tuned", train_key)
        arm_entries = [e for e in entries if arm.audits is None or e.label in arm.audits]
        audits_dir = _audit_all(arm_dir / "audits", arm_entries, str(train_dir / "merged"), tuned_key, recipe,
                                models, log, progress)
        compare_key = stage_key(start_key, tuned_key, [e.key() for e in arm_entries], recipe.gates,
                                recipe.seed, *([recipe.bias_group] if recipe.bias_group else []))
        compare_dir = run_stage(arm_dir / "compare", compare_key, lambda d, a=audits_dir, e=arm_entries: _compare(
            start_audits, a, d, recipe, {x.label for x in e}), log, label=f"{arm.name}/compare")
        arms[arm.name] = {"train": train_dir, "audits": audits_dir, "compare": compare_dir}

    comparisons = {name: json.loads((a["compare"] / "comparison.json").read_text()) for name, a in arms.items()}
    failed = [{"arm": name, **gate} for name, c in comparisons.items() for gate in c.get("gates", [])
              if not gate["passed"]]
    header, rows = method_table(recipe, arms, comparisons, start_audits)
    domains = domain_table(recipe, comparisons)
    with atomic_open(out / METHODS_FILE) as handle:
        handle.write(table_markdown(METHODS_TITLE, header, rows)
                     + ("\n" + table_markdown(DOMAINS_TITLE, *domains) if domains else ""))
    if recipe.report:
        from fairtune.report import ReportArm, ReportTable, build_report

        # The prompt method trains nothing and writes no training log: no curves for it.
        report_arms = [ReportArm(name, a["audits"], a["train"] if (a["train"] / "train_log.jsonl").exists() else None,
                                 a["compare"] / "comparison.json") for name, a in arms.items()]
        build_report(out / "report", title=f"fairtune: {recipe.name}", base=start_audits, arms=report_arms,
                     notes=notes, tables=[ReportTable("methods", METHODS_TITLE, header, rows),
                                          *([ReportTable("domains", DOMAINS_TITLE, *domains)] if domains else [])],
                     bias_group=recipe.bias_group)
    summary = {
        "recipe": recipe.model_dump(mode="json"), "model": recipe.model, "start_model": start_model,
        "notes": notes, "arms": {name: {k: str(v) for k, v in a.items()} for name, a in arms.items()},
        "gates": {name: c.get("gates", []) for name, c in comparisons.items()},
        "passed": not failed, "stages": _stage_times(out), "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / PIPELINE_FILE, summary)
    return PipelineResult(out, summary, not failed, failed)


def _train_one(config: dict[str, Any], progress: bool) -> None:
    from fairtune.training.config import load_config
    from fairtune.training.trainer import train

    train(load_config(config), progress=progress)


def _train_in_child(config: dict[str, Any], progress: bool) -> None:
    """Train in a fresh process: the manifest's peak RSS is then the training's own (not the
    audits' before it), and the memory goes back when it ends."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_train_one, config, progress).result()


def _files_key(args: dict[str, Any]) -> list[str]:
    """Hashes of input files a data step names, so editing one redoes the step."""
    from fairtune.io import sha256_file

    paths = []
    for value in args.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and Path(item).is_file():
                paths.append(sha256_file(item))
    return paths


def _build_data(api: Any, step: Any, out: Path, seed: int, model: str) -> None:
    builder = getattr(api, step.builder.replace("-", "_"))
    args = {"seed": seed, **step.args}
    if step.builder == "selfgen":
        args.setdefault("model", model)
    builder(out=out, force=True, **args)


def _guard_note(label: str, data_dir: Path) -> str:
    """What the contamination guard found in a data step, for the report: the evidence that no
    audit item was trained on."""
    card = json.loads((data_dir / "data_card.json").read_text())
    found = card.get("contamination")
    if not found:
        return f"Data step {label}: the contamination guard was off."
    references = found.get("references") or []
    texts = sum(r.get("texts", 0) for r in references)
    names = ", ".join(r["name"] for r in references)
    verdict = ("none of them overlaps" if not found["overlapping_records"] else
               f"{found['overlapping_records']} overlap (allowed by the recipe)")
    return (f"Data step {label}: the contamination guard checked {found['checked_records']} records against "
            f"{texts} texts of {len(references)} evaluation sets ({names}): {verdict} (exact text, shared "
            f"{found.get('settings', {}).get('ngram', 8)}-word runs, template frames).")


def _compare(base: Path, tuned: Path, out: Path, recipe: Recipe, audited: set[str]) -> None:
    """Compare an arm with its start; gates on audits the arm does not run do not apply to it."""
    from fairtune.compare import compare_runs, write_comparison
    from fairtune.compare.gates import evaluate_gates, load_gates

    comparison = compare_runs(base, tuned, seed=recipe.seed, groups=[recipe.bias_group] if recipe.bias_group else False)
    gates = [g for g in recipe.gates if g.get("audit") in audited]
    if gates:
        evaluate_gates(comparison, load_gates(gates))
    write_comparison(comparison, out)


def _stage_times(out: Path) -> dict[str, float]:
    return {str(p.parent.relative_to(out)): json.loads(p.read_text())["seconds"]
            for p in sorted(out.rglob("stage.json"))}


# What debiasing must not cost, beside the gaps: (audit, metric, column, as a percent change).
GUARDS = (("capability", "perplexity", "perplexity", True), ("stereoset", "lms", "StereoSet LMS", False),
          ("refusal", "refusal_rate", "refusal", False), ("over-refusal", "over_refusal_rate", "over-refusal", False),
          ("counterfactual", "sentiment_gap_abs", "counterfactual sentiment gap", False))


def gap_columns(recipe: Recipe, summaries: dict[str, dict]) -> list[tuple[str, str, str, bool]]:
    """``(audit, metric, group, is_gap)`` for every bias gap the recipe's audits declare
    (:attr:`~fairtune.audits.base.Audit.bias_gaps`), each followed by its task accuracy: in the
    recipe's ``bias_group`` where the audit reports that group, else overall."""
    from fairtune.audits import AUDITS

    columns = []
    for entry in recipe.audits:
        groups = (summaries.get(entry.suite) or {}).get("metrics", {})
        group = recipe.bias_group if recipe.bias_group in groups else "overall"
        for gap, accuracy in AUDITS[entry.suite].bias_gaps.items():
            columns.append((entry.suite, gap, group, True))
            if accuracy:
                columns.append((entry.suite, accuracy, group, False))
    return columns


def _column_name(audit: str, metric: str, group: str) -> str:
    return f"{audit} {metric}" + ("" if group == "overall" else f" ({group})")


def method_table(recipe: Recipe, arms: dict[str, dict[str, Path]], comparisons: dict[str, dict],
                 start_audits: Path) -> tuple[list[str], list[list[str]]]:
    """The measured method table: one row per arm, every cell a figure from this run: each bias
    gap's paired change with the share of the gap it closed, the task accuracy beside it, and
    what the change cost (perplexity in percent, LMS, refusal, over-refusal, counterfactual
    parity, degenerate replies). Peak RSS is the training process's own (each arm trains in a
    fresh process)."""
    summaries = {e.suite: json.loads((start_audits / e.label / "summary.json").read_text())
                 for e in recipe.audits if (start_audits / e.label / "summary.json").exists()}
    gaps = gap_columns(recipe, summaries)
    guards = [g for g in GUARDS if g[0] in summaries]
    header = ["arm", "method", "trainable share", "train wall s", "peak RSS MiB"]
    header += [("gap " if is_gap else "") + _column_name(audit, metric, group) for audit, metric, group, is_gap in gaps]
    header += [name + (" %" if percent else "") for _, _, name, percent in guards] + ["degenerate replies"]
    rows = []
    for name, arm in arms.items():
        manifest = json.loads((arm["train"] / "manifest.json").read_text())
        info = stage_info(arm["train"]) or {}
        rows.append([name, str(manifest.get("method")), f"{manifest.get('trainable_share', 0):.4%}",
                     f"{info.get('seconds', manifest.get('wall_seconds', 0)):.0f}",
                     f"{manifest.get('peak_rss_mib', 0):.0f}",
                     *(_delta_cell(comparisons[name], audit, metric, group, closed=is_gap)
                       for audit, metric, group, is_gap in gaps),
                     *(_delta_cell(comparisons[name], audit, metric, "overall", percent=percent)
                       for audit, metric, _, percent in guards),
                     _degenerate_cell(start_audits, arm["audits"])])
    return header, rows


DOMAINS_TITLE = "Bias gaps by domain"


def domain_table(recipe: Recipe, comparisons: dict[str, dict]) -> tuple[list[str], list[list[str]]] | None:
    """Each arm's paired change in every per-domain group of the bias group ("gender:traits"), so
    an arm trained on some domains shows whether its change holds in the others. None when no
    audit reports such groups."""
    from fairtune.audits import AUDITS

    if not recipe.bias_group:
        return None
    columns: list[tuple[str, str, str]] = []
    for comparison in comparisons.values():
        for audit, result in comparison.get("audits", {}).items():
            for row in result.get("metrics", []):
                key = (audit, row["metric"], row["group"])
                if (row["metric"] in AUDITS[audit].bias_gaps and row["group"].startswith(f"{recipe.bias_group}:")
                        and key not in columns):
                    columns.append(key)
    if not columns:
        return None
    header = ["arm"] + [f"{audit} {metric} ({group})" for audit, metric, group in columns]
    rows = [[name, *(_delta_cell(comparison, audit, metric, group, closed=True) for audit, metric, group in columns)]
            for name, comparison in comparisons.items()]
    return header, rows


def table_markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _comparison_row(comparison: dict, audit: str, metric: str, group: str) -> dict | None:
    rows = comparison.get("audits", {}).get(audit, {}).get("metrics", [])
    return next((r for r in rows if r["metric"] == metric and r["group"] == group), None)


def _delta_cell(comparison: dict, audit: str, metric: str, group: str = "overall", *, closed: bool = False,
                percent: bool = False) -> str:
    """``delta [ci]``; for a gap also the share of the starting gap it closed, for a percent
    column the change relative to the start."""
    row = _comparison_row(comparison, audit, metric, group)
    if row is None or row["delta"] is None:
        return "-"
    scale = 100 / row["a"] if percent and row["a"] else 1.0
    unit = "%" if percent and row["a"] else ""
    interval = (f" [{row['ci_low'] * scale:+.3f}{unit}, {row['ci_high'] * scale:+.3f}{unit}]"
                if row["ci_low"] is not None else "")
    mark = {"improved": " (better)", "regressed": " (worse)"}.get(row["change"], "")
    share = f", {-row['delta'] / row['a']:.0%} closed" if closed and row["a"] else ""
    return f"{row['delta'] * scale:+.3f}{unit}{interval}{share}{mark}"


def degenerate_replies(audits_dir: Path) -> tuple[int, int]:
    """``(degenerate, all)`` replies over the audits that judge replies (those with a
    ``degenerate_rate``): repetition and empty-loop replies of a damaged model."""
    from fairtune.audits import AUDITS
    from fairtune.io import read_jsonl

    count = total = 0
    for records_file in sorted(audits_dir.glob("*/records.jsonl")):
        summary = json.loads((records_file.parent / "summary.json").read_text())
        if "degenerate_rate" not in AUDITS[summary["suite"]].binary_outcomes:
            continue
        records = read_jsonl(records_file)
        count += sum(int((r.get("outcome") or {}).get("degenerate") or 0) for r in records)
        total += len(records)
    return count, total


def _degenerate_cell(start_audits: Path, arm_audits: Path) -> str:
    (before, n_before), (after, n_after) = degenerate_replies(start_audits), degenerate_replies(arm_audits)
    return f"{before} -> {after} of {n_after}" if n_after else "-"
