"""The extrapolation-debiasing recipe: audit -> rational data -> LoRA -> audit, in and out of sample.

The loop of Gao, Jiang and Yan (2026) on any model: measure the error-on-revision (CG)
coefficient of the model's forecasts, show that a "be rational" system prompt does not remove
it, fine-tune on rational forecast targets, and measure again on panels whose rho levels,
scale, number format (and, optionally, horizons) training never showed.

Stages write into ``out/<stage>/`` and are skipped when their directory is complete and was
made from the same inputs (:mod:`fairtune.pipeline.stages`), so an interrupted run resumes and a
changed setting redoes only what depends on it. ``summary.json``/``summary.md`` and
``forecast_vs_rational.png`` are derived from the stage outputs at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fairtune.forecasting.dataset import DEFAULT_TARGET, TARGET_MODELS, Target
from fairtune.forecasting.panel import SPLITS, TRAIN_PANELS, PanelSpec, held_out_axes
from fairtune.forecasting.prompts import RATIONAL_SYSTEM_PROMPT
from fairtune.io import atomic_open, write_json
from fairtune.pipeline.stages import run_stage, stage_key
PLOT_FILE = "forecast_vs_rational.png"
# The target is judged on the CG coefficient's expected-error form: the same coefficient as the
# realised-error one without the innovations' noise. On 8 series a level that noise alone (s.d.
# about 0.10 across panel seeds, against 0.045) fails an 80% target on a base of -0.4 for 40% of
# panels even for a forecaster that knows the true process (benchmarks/cg_sampling_noise.py).
# Both forms are reported, side by side.
CG_FORMS = ("cg_coefficient_expected", "cg_coefficient")
HEADLINE = CG_FORMS[0]
TARGET_SHARE = 0.8     # the target: 80% of the way to zero, out of sample
SEED_STRIDE = 7919     # panel seeds move by a prime per recipe seed, far from the built-in seeds


# Training defaults, shared by TrainSettings and `fairtune extrapolation` (README: the variants).
DEFAULT_EPOCHS = 2
DEFAULT_LR = 1e-3
DEFAULT_RANK = 16


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(DEFAULT_EPOCHS, ge=1)
    lr: float = Field(DEFAULT_LR, gt=0)
    rank: int = Field(DEFAULT_RANK, ge=1)
    batch_tokens: int = Field(2048, ge=64)


class ExtrapolationRecipe(BaseModel):
    """Everything the recipe depends on; the stage keys hash these fields."""

    model_config = ConfigDict(extra="forbid")

    model: str = "embedded"
    train_panels: tuple[PanelSpec, ...] = TRAIN_PANELS
    evaluations: dict[str, PanelSpec] = Field(
        default_factory=lambda: {split: SPLITS[split] for split in ("in-sample", "rho-out-of-sample", "out-of-sample")})
    system_prompt: str = RATIONAL_SYSTEM_PROMPT
    target: Target = DEFAULT_TARGET
    train: TrainSettings = Field(default_factory=TrainSettings)
    max_new_tokens: int = Field(24, ge=8)
    seed: int = 0

    def reseeded(self, seed: int) -> ExtrapolationRecipe:
        """The same recipe on fresh series: every panel's seed moves with ``seed``."""
        move = lambda p: p.model_copy(update={"seed": p.seed + seed * SEED_STRIDE})  # noqa: E731
        return self.model_copy(update={"seed": seed, "train_panels": tuple(move(p) for p in self.train_panels),
                                       "evaluations": {k: move(p) for k, p in self.evaluations.items()}})

    def with_rhos(self, train: Sequence[float] | None = None, evaluation: Sequence[float] | None = None,
                  splits: Sequence[str] | None = None) -> ExtrapolationRecipe:
        """Other rho levels for the training panels and/or the evaluation panels (default: every
        panel that holds out the rho levels, i.e. every split but in-sample)."""
        def levels(panel: PanelSpec, rhos: Sequence[float]) -> PanelSpec:
            return PanelSpec.model_validate({**panel.model_dump(), "rhos": tuple(rhos)})   # validated

        update: dict[str, Any] = {}
        if train:
            update["train_panels"] = tuple(levels(p, train) for p in self.train_panels)
        if evaluation:
            chosen = set(splits) if splits is not None else {
                name for name, panel in self.evaluations.items()
                if held_out_axes(self.train_panels, panel)["rho"]}
            update["evaluations"] = {name: levels(panel, evaluation) if name in chosen else panel
                                     for name, panel in self.evaluations.items()}
        return self.model_copy(update=update)


@dataclass
class RecipeResult:
    out_dir: Path
    summary: dict[str, Any]


def _stage(out: Path, name: str, key: str, build: Callable[[Path], Any], log: Callable[[str], None]) -> Path:
    return run_stage(out / name, key, build, log)


def run_extrapolation(recipe: ExtrapolationRecipe | None = None, *, out: str | Path,
                      progress: bool = False, log: Callable[[str], None] = lambda _: None) -> RecipeResult:
    """Run (or resume) the recipe into ``out``; returns the summary also written there."""
    from fairtune.curation.api import forecasts
    from fairtune.models import load_model
    from fairtune.runner import run_audit
    from fairtune.training.align import model_fingerprint
    from fairtune.training.config import load_config
    from fairtune.training.trainer import train

    recipe = recipe or ExtrapolationRecipe()
    base_key = stage_key("model", model_fingerprint(recipe.model))   # an unknown model fails before any write
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    panels = _write_panels(out, recipe)

    base = None

    def base_model():
        nonlocal base
        base = base or load_model(recipe.model)
        return base

    def audit_stage(name: str, model_key: str, model: Callable[[], Any], split: str,
                    system: str | None = None) -> Path:
        key = stage_key(model_key, recipe.evaluations[split].model_dump(mode="json"), system, recipe.max_new_tokens,
                   recipe.seed)
        return _stage(out, name, key, lambda d: run_audit(
            "extrapolation", model=model(), data=panels[split], out=d, force=True, seed=recipe.seed,
            max_new_tokens=recipe.max_new_tokens, progress=progress, system_prompt=system), log)

    runs: dict[str, dict[str, Path]] = {"base": {}, "prompt": {}, "tuned": {}}
    for split in recipe.evaluations:
        runs["base"][split] = audit_stage(f"audit-base-{split}", base_key, base_model, split)
        runs["prompt"][split] = audit_stage(f"audit-prompt-{split}", base_key, base_model, split,
                                            recipe.system_prompt)

    data_key = stage_key([p.model_dump(mode="json") for p in recipe.train_panels], recipe.target,
                         TARGET_MODELS[recipe.target], recipe.seed)
    data_dir = _stage(out, "data", data_key, lambda d: forecasts(out=d, seed=recipe.seed, force=True,
                                                                panels=recipe.train_panels, target=recipe.target),
                      log)

    train_key = stage_key(base_key, data_key, recipe.train.model_dump(), recipe.seed)

    def build_train(d: Path) -> None:
        t = recipe.train
        config = load_config({
            "model": recipe.model, "data": [str(data_dir / "train.jsonl")], "seed": recipe.seed, "out": str(d),
            "method": {"name": "lora", "rank": t.rank, "alpha": 2 * t.rank, "dropout": 0.05},
            "optim": {"lr": t.lr, "epochs": t.epochs, "batch_tokens": t.batch_tokens, "schedule": "linear",
                      "warmup_steps": 5},
        })
        train(config, progress=progress)

    train_dir = _stage(out, "train", train_key, build_train, log)
    tuned_key = stage_key("tuned", train_key)
    tuned = None

    def tuned_model():
        nonlocal tuned
        tuned = tuned or load_model(str(train_dir / "merged"))
        return tuned

    for split in recipe.evaluations:
        runs["tuned"][split] = audit_stage(f"audit-tuned-{split}", tuned_key, tuned_model, split)

    summary = summarise(recipe, runs, train_dir)
    write_json(out / "summary.json", summary)
    with atomic_open(out / "summary.md") as handle:
        handle.write(summary_markdown(summary))
    plot_forecasts(runs, out / PLOT_FILE)
    return RecipeResult(out, summary)


def _write_panels(out: Path, recipe: ExtrapolationRecipe) -> dict[str, Path]:
    folder = out / "panels"
    folder.mkdir(exist_ok=True)
    paths = {}
    for split, spec in recipe.evaluations.items():
        paths[split] = folder / f"{split}.json"
        write_json(paths[split], spec.model_dump(mode="json"))
    write_json(folder / "train.json", [p.model_dump(mode="json") for p in recipe.train_panels])
    return paths


def _metrics(run_dir: Path, seed: int) -> dict[str, Any]:
    """Derived from the audit's records, the source of truth, so that a stage cached by an earlier
    version of fairtune still reports every measure this one computes."""
    from fairtune.forecasting.analysis import extrapolation_metrics
    from fairtune.io import read_jsonl

    return extrapolation_metrics(read_jsonl(run_dir / "records.jsonl"), seed=seed).as_dict()


def summarise(recipe: ExtrapolationRecipe, runs: dict[str, dict[str, Path]], train_dir: Path) -> dict[str, Any]:
    """Per split: each arm's pooled metrics, and how far each form of the CG coefficient moved toward zero."""
    splits = {}
    for split, spec in recipe.evaluations.items():
        arms = {arm: _metrics(runs[arm][split], recipe.seed) for arm in runs}
        moved = {form: {arm: _share_moved(arms["base"]["overall"][form]["value"], arms[arm]["overall"][form]["value"])
                        for arm in ("prompt", "tuned")} for form in CG_FORMS}
        splits[split] = {"held_out": held_out_axes(recipe.train_panels, spec), "arms": arms,
                         "share_moved_to_zero": moved}
    oos = {form: splits.get("out-of-sample", {}).get("share_moved_to_zero", {}).get(form, {}).get("tuned")
           for form in CG_FORMS}
    manifest = json.loads((train_dir / "manifest.json").read_text())
    return {"recipe": recipe.model_dump(mode="json"), "splits": splits,
            "target": {"metric": HEADLINE, "split": "out-of-sample", "share": TARGET_SHARE,
                       "achieved": oos[HEADLINE], "met": oos[HEADLINE] is not None and oos[HEADLINE] >= TARGET_SHARE,
                       "achieved_by_form": oos},
            "training": {**{k: manifest.get(k) for k in ("wall_seconds", "steps", "trainable_share", "peak_rss_mib")},
                         "final_loss": manifest.get("final", {}).get("loss")}}


def _share_moved(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return 1.0 - abs(after) / abs(before)


def _cell(estimate: dict[str, Any]) -> str:
    if estimate["value"] is None:
        return "n/a"
    interval = (f" [{estimate['ci_low']:.3f}, {estimate['ci_high']:.3f}]"
                if estimate["ci_low"] is not None else "")
    return f"{estimate['value']:.3f}{interval}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Extrapolation debiasing", ""]
    target = summary["target"]
    others = ", ".join(f"{form} {_share(v)}" for form, v in target["achieved_by_form"].items()
                       if form != target["metric"])
    lines += [f"Target: the pooled CG coefficient out of sample moves at least {target['share']:.0%} of the way to "
              f"zero, judged on {target['metric']} (the error measured from the conditional expectation, not the "
              f"realised value: the same coefficient without the innovations' noise). Achieved: "
              f"{_share(target['achieved'])} ({'met' if target['met'] else 'not met'}); {others}.", ""]
    metrics = (*CG_FORMS, "extrapolation_loading", "persistence_gap", "mse_vs_rational", "parse_failure_rate")
    for split, data in summary["splits"].items():
        held = ", ".join(k for k, v in data["held_out"].items() if v) or "nothing"
        lines += [f"## {split} (held out: {held})", "", "| metric | base | prompt | tuned |", "|---|---|---|---|"]
        for metric in metrics:
            cells = [_cell(data["arms"][arm]["overall"][metric]) for arm in ("base", "prompt", "tuned")]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
        for form, moved in data["share_moved_to_zero"].items():
            lines.append(f"{form} moved toward zero: " + ", ".join(f"{arm} {_share(v)}" for arm, v in moved.items())
                         + "  ")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_forecasts(runs: dict[str, dict[str, Path]], path: Path) -> None:
    """Forecast vs rational forecast (both as distance from the mean in sigmas), one panel per
    split and arm; the diagonal is rational."""
    from fairtune.io import read_jsonl
    from fairtune.report.plots import new_figure

    arms = list(runs)
    splits = list(runs[arms[0]])
    # A Figure on its own Agg canvas, as the report draws: no pyplot, so a notebook's or a
    # user's matplotlib backend is never switched by a library call.
    fig = new_figure(4 * len(arms), 3.6 * len(splits))
    axes = fig.subplots(len(splits), len(arms), squeeze=False)
    for row, split in enumerate(splits):
        for col, arm in enumerate(arms):
            ax = axes[row][col]
            xs, ys = [], []
            for record in read_jsonl(runs[arm][split] / "records.jsonl"):
                forecasts = record["scores"]["forecasts"]
                if forecasts is None:
                    continue
                inputs = record["inputs"]
                xs.append((inputs["rational"][0] - inputs["mu"]) / inputs["sigma"])
                ys.append((forecasts[0] - inputs["mu"]) / inputs["sigma"])
            ax.scatter(xs, ys, s=6, alpha=0.5)
            limit = max([3.0, *map(abs, xs)])
            ax.plot([-limit, limit], [-limit, limit], color="black", linewidth=0.8)
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-2 * limit, 2 * limit)
            ax.set_title(f"{split}: {arm}")
            ax.set_xlabel("rational forecast (sigmas from mean)")
            if col == 0:
                ax.set_ylabel("model forecast (sigmas from mean)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)
