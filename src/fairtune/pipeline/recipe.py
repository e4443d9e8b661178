"""Recipes: what ``fairtune run`` does, as validated data (pydantic, unknown keys refused).

A recipe names the model, the audits (each a suite plus optional data and generation budget),
whether to give the base model guardrails first, the data builders, the arms (each a training
config fragment: method, regularisers, optimiser), the red-team audits run on tuned models only,
and the gates. Shipped recipes live in ``fairtune/recipes/data/<name>.yaml``; ``fairtune run NAME``
takes one of those, ``fairtune run PATH`` a file of the user's.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fairtune.errors import InputError, from_validation
from fairtune.readers import read_mapping
from fairtune.training import align as align_defaults


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuditEntry(_Strict):
    suite: str
    name: str | None = None              # directory and comparison name; default: the suite
    data: str | None = None              # a benchmark file, or split:NAME for extrapolation
    max_new_tokens: int = Field(48, ge=1)
    bundle: str | None = None            # only the items of this bundle ("gender"), where the audit joins it

    @property
    def label(self) -> str:
        return self.name or self.suite

    def key(self) -> dict[str, Any]:
        """What the entry's stage keys hash (``bundle`` only when set, so older keys stay valid)."""
        return self.model_dump(exclude={"bundle"} if self.bundle is None else set())

    @model_validator(mode="after")
    def _bundle_joined(self) -> AuditEntry:
        from fairtune.audits import AUDITS

        if self.bundle is not None and self.bundle not in AUDITS[self.suite].bundles:
            raise ValueError(f"audit '{self.suite}' joins no bundle '{self.bundle}' (its bundles: "
                             f"{', '.join(AUDITS[self.suite].bundles) or 'none'})")
        return self

    @field_validator("suite")
    @classmethod
    def _known(cls, value: str) -> str:
        from fairtune.audits import AUDITS

        if value not in AUDITS:
            raise ValueError(f"unknown audit '{value}' (audits: {', '.join(sorted(AUDITS))})")
        return value


class AlignSettings(_Strict):
    when: Literal["auto", "always", "never"] = "auto"
    min_refusal: float = Field(0.5, ge=0, le=1)   # auto: align when the base refuses less than this
    # "refusal": audit the base model with the refusal audit first, and with the others only when
    # it is not aligned (every arm is compared with the aligned model, so those would go unused).
    base_audits: Literal["all", "refusal"] = "all"
    helpful_weight: int = Field(align_defaults.DEFAULT_HELPFUL_WEIGHT, ge=1)
    epochs: int = Field(align_defaults.DEFAULT_EPOCHS, ge=1)
    lr: float = Field(align_defaults.DEFAULT_LR, gt=0)
    refusal_unlikelihood: float = Field(align_defaults.DEFAULT_REFUSAL_UNLIKELIHOOD, ge=0)


BUILDERS = ("templates", "cda", "selfgen", "safety-anchors", "forecasts", "pairs")
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


class DataStep(_Strict):
    builder: Literal["templates", "cda", "selfgen", "safety-anchors", "forecasts", "pairs"]
    name: str | None = Field(None, pattern=NAME)           # directory name; default "<index>-<builder>"
    args: dict[str, Any] = Field(default_factory=dict)   # keyword arguments of fairtune.curation.api.<builder>


class Arm(_Strict):
    name: str = Field(pattern=NAME)
    train: dict[str, Any] = Field(default_factory=dict)   # a TrainConfig without model, data and out
    data: list[str] | None = None      # names of the data steps this arm trains on; None: all of them
    audits: list[str] | None = None    # names of the audits run on this arm; None: all (and red-team)


class Recipe(_Strict):
    name: str
    description: str = ""
    model: str = "embedded"
    seed: int = 0
    audits: list[AuditEntry]
    align: AlignSettings = Field(default_factory=AlignSettings)
    data: list[DataStep] = Field(default_factory=list)
    arms: list[Arm]
    redteam: list[AuditEntry] = Field(default_factory=list)
    gates: list[dict[str, Any]] = Field(default_factory=list)
    report: bool = True
    # The bias type the study targets ("gender"): comparisons and the method table's gap columns
    # use this group (and its per-domain "<group>:<domain>" groups) where an audit reports it.
    bias_group: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        labels = [a.label for a in [*self.audits, *self.redteam]]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"audit name '{label}' used twice: give the entries distinct names")
        names = [a.name for a in self.arms]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"arm '{name}' given twice")
        if not self.arms:
            raise ValueError("no arms: a recipe trains at least one")
        trained = [a.name for a in self.arms
                   if a.train.get("method", {}).get("name") != "prompt" and not a.train.get("attack")]
        if trained and not self.data:
            raise ValueError(f"arms {', '.join(trained)} train but the recipe builds no data")
        if self.align.when == "auto" and "refusal" not in [a.suite for a in self.audits]:
            raise ValueError("align.when 'auto' needs a 'refusal' audit to decide")
        steps = self.data_labels()
        for arm in self.arms:
            for name in arm.data or []:
                if name not in steps:
                    raise ValueError(f"arm '{arm.name}' trains on data step '{name}', which the recipe does not "
                                     f"build (data steps: {', '.join(steps) or 'none'})")
            for name in arm.audits or []:
                if name not in labels:
                    raise ValueError(f"arm '{arm.name}' names audit '{name}', which the recipe does not run "
                                     f"(audits: {', '.join(labels)})")
        return self

    def data_labels(self) -> list[str]:
        """Each data step's name: its own, else ``<index>-<builder>`` (its directory under data/)."""
        return [step.name or f"{index}-{step.builder}" for index, step in enumerate(self.data)]


def builtin_recipes() -> dict[str, Path]:
    folder = Path(str(resources.files("fairtune.recipes") / "data"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def load_recipe(source: str | Path | dict[str, Any]) -> Recipe:
    """A validated recipe from a shipped name, a YAML file or a dict; bad keys fail in one line."""
    if isinstance(source, dict):
        raw, label = source, "recipe"
    else:
        shipped = builtin_recipes()
        path = shipped.get(str(source), Path(source))
        if not path.is_file():
            raise InputError(f"no such recipe (shipped: {', '.join(shipped)}; or give a YAML file)", file=source)
        raw, label = read_mapping(path), str(path)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc, file=label) from None
    _check_deeper(recipe, label)
    return recipe


def _check_deeper(recipe: Recipe, label: str) -> None:
    """What pydantic cannot see: each arm's training fragment and the gates, validated now so
    that a typo fails before the first audit, not after an hour of training."""
    for index, arm in enumerate(recipe.arms):
        for key in ("model", "data", "out"):
            if key in arm.train:
                raise InputError(f"'{key}' is set by the pipeline, not the recipe", file=label,
                                 field=f"arms.{index}.train.{key}")
        try:
            _validate_fragment(arm.train, recipe.model)
        except InputError as exc:
            raise InputError(exc.reason, file=label, field=f"arms.{index}.train.{exc.field}") from None
    if recipe.gates:
        from fairtune.compare.gates import load_gates

        try:
            load_gates(recipe.gates)
        except InputError as exc:
            raise InputError(exc.reason, file=label, field=f"gates.{exc.field}" if exc.field else "gates") from None


def _validate_fragment(train: dict[str, Any], model: str) -> None:
    from fairtune.training.config import TrainConfig

    # The data file does not exist yet; a placeholder lets the rest of the fragment validate.
    try:
        TrainConfig.model_validate({**train, "model": model, "data": ["data.jsonl"], "out": "out"})
    except ValidationError as exc:
        raise from_validation(exc, file=None) from None
