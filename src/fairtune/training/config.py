"""The training configuration: one validated object, read from YAML or JSON or built in Python.

Unknown keys, wrong types and missing files fail here, before any model loads, with one line
that names the key (``config.yaml: method.rank: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fairtune.errors import InputError, from_validation
from fairtune.readers import read_mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class MethodConfig(_Strict):
    """What is trained. ``lora``/``dora`` read rank/alpha/dropout/target_modules; ``prompt`` reads
    ``system_prompt`` and trains nothing."""

    name: Literal["lora", "dora", "norm", "full", "prompt"] = "lora"
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = None   # None: the architecture's default
    system_prompt: str | None = None                                  # prompt method; None: our default


class KlToBase(_Strict):
    """Per-token KL(base || tuned) on anchor batches."""

    name: Literal["kl_to_base"]
    weight: float = Field(0.5, ge=0)
    anchor_batch_tokens: int | None = Field(None, ge=16)   # anchor tokens per step; None: batch_tokens / 4


class L2SP(_Strict):
    """Squared distance of trainable weights (LoRA: of the merged delta) from their start."""

    name: Literal["l2sp"]
    weight: float = Field(0.01, ge=0)


class EWC(_Strict):
    """Diagonal-Fisher-weighted squared distance from the start, Fisher from the anchor set."""

    name: Literal["ewc"]
    weight: float = Field(50.0, ge=0)
    fisher_examples: int = Field(64, ge=1)


class Constrained(_Strict):
    """Token-wise constrained SFT (Qi et al. 2024): replaces the plain SFT loss."""

    name: Literal["constrained"]
    beta_first: float = Field(0.5, gt=0)     # the first response token
    beta_early: float = Field(2.0, gt=0)     # tokens 2..early_tokens
    early_tokens: int = Field(5, ge=1)
    beta_rest: float = Field(0.1, gt=0)


class Unlikelihood(_Strict):
    """Token-level unlikelihood on the labelled text of ``loss: unlikelihood`` training records."""

    name: Literal["unlikelihood"]
    weight: float = Field(1.0, ge=0)
    first_tokens: int | None = Field(None, ge=1)   # only the first N tokens of each unlikely reply


class SafetyMix(_Strict):
    """Mix anchor examples into the training data: a count, or a share of the training set."""

    name: Literal["safety_mix"]
    count: int | None = Field(None, ge=1)
    share: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_of(self) -> SafetyMix:
        if (self.count is None) == (self.share is None):
            raise ValueError("give exactly one of count or share")
        return self


class Adaptive(_Strict):
    """A Lagrangian weight on another term: it rises while the measured constraint is over budget
    and falls when under (projected dual ascent, never below zero). A regulariser's constraint is
    measured on held-back anchors (``anchor_kl``, ``anchor_nll_increase``); a fairness objective's
    is its own value on its held-back rows (``held_out``: pairs or contexts that never train)."""

    name: Literal["adaptive"]
    target: Literal["kl_to_base", "l2sp", "ewc", "counterfactual_pairing", "attribute_equalisation", "adversarial"]
    constraint: Literal["anchor_kl", "anchor_nll_increase", "held_out"] = "anchor_kl"
    budget: float = Field(0.05, ge=0)
    step_size: float = Field(5.0, gt=0)
    every: int = Field(1, ge=1)               # measure every N optimizer steps
    max_weight: float = Field(100.0, gt=0)


Regulariser = Annotated[Union[KlToBase, L2SP, EWC, Constrained, Unlikelihood, SafetyMix, Adaptive],
                        Field(discriminator="name")]

AXES = ("gender", "religion", "race")   # axes with a shipped attribute word list


class CounterfactualPairing(_Strict):
    """Counterfactual pairs (training records sharing ``meta.group`` whose ``meta.attributes``
    differ on ``axis``): the divergence of the next-token distributions at every position after
    the swapped words, plus ``loglik_gap`` times the squared gap of the two sequences' total
    log-likelihoods."""

    name: Literal["counterfactual_pairing"]
    weight: float = Field(1.0, ge=0)
    axis: Literal[AXES] = "gender"
    divergence: Literal["jsd", "symmetric_kl"] = "jsd"
    loglik_gap: float = Field(0.0, ge=0)
    # "zero" pulls every pair's log-likelihood gap to 0; "batch_mean" to the batch's mean gap in the
    # same direction (female - male, say); "swap_offset" to the running mean of the gaps with the same
    # swapped words. With the last two, a word's frequency offset (one word likelier than the other
    # everywhere) stays and only the part of the gap that depends on the context is trained away.
    loglik_gap_target: Literal["zero", "batch_mean", "swap_offset"] = "zero"
    values: list[str] | None = None          # pair only members with these values; None: any two
    held_out: int = Field(16, ge=0)          # pairs held back from training (adaptive ``held_out``)

    @field_validator("values")
    @classmethod
    def _two_values(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) < 2:
            raise ValueError("give at least two distinct values to pair")
        return values


class AttributeEqualisation(_Strict):
    """On neutral contexts (``loss: none`` context records), the squared log-ratio of the
    probabilities of each attribute word pair as the next word (she/he, his/her, ...), summed
    over pairs: the axis's shipped word list, ``words`` (a TSV file of the same layout) or
    ``pairs`` given inline."""

    name: Literal["attribute_equalisation"]
    weight: float = Field(1.0, ge=0)
    axis: Literal[AXES] = "gender"
    words: Path | None = None                # replaces the shipped list
    pairs: list[list[str]] | None = None     # added to the list: [[she, he], ...]
    contexts_per_step: int = Field(8, ge=1)
    held_out: int = Field(16, ge=0)

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, pairs: list[list[str]] | None) -> list[list[str]] | None:
        if pairs is not None:
            if not pairs:
                raise ValueError("empty word list")
            for row in pairs:
                if len(row) < 2 or any(not w.strip() for w in row):
                    raise ValueError("each entry needs at least two non-empty words")
        return pairs


class Adversarial(_Strict):
    """A probe on layer ``layer``'s mean-pooled hidden state learns the ``meta.association`` of
    neutral contexts; a gradient-reversal term trains the model to defeat it."""

    name: Literal["adversarial"]
    weight: float = Field(0.1, ge=0)
    axis: Literal[AXES] = "gender"
    layer: int = -1                          # hidden_states index: 0 embeddings, -1 the last layer
    probe: Literal["linear", "mlp"] = "linear"
    probe_hidden: int = Field(64, ge=1)
    probe_lr: float = Field(1e-3, gt=0)
    contexts_per_step: int = Field(16, ge=2)
    held_out: int = Field(16, ge=0)


Objective = Annotated[Union[CounterfactualPairing, AttributeEqualisation, Adversarial],
                      Field(discriminator="name")]


class OptimConfig(_Strict):
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = Field(0, ge=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)       # stops early when reached
    batch_tokens: int = Field(1024, ge=16)          # padded tokens per micro-batch
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_length: int = Field(512, ge=8)              # longer examples are truncated (and counted)


class TrainConfig(_Strict):
    """Everything a training run depends on; its hash names the run's cache entry."""

    model: str = "embedded"
    dtype: Literal["float32", "bfloat16"] = "float32"
    # bf16: matrix products in bfloat16 under autocast, weights and optimizer state in float32
    # (accelerate's mixed precision); the saved model stays float32.
    mixed_precision: Literal["no", "bf16"] = "no"
    trust_remote_code: bool = False
    data: list[Path] = Field(default_factory=list)  # training JSONL files (fairtune record format)
    attack: Path | None = None                      # extra data appended to training (guardrail experiments)
    anchors: Path | None = None                     # None: the built-in safety anchor set
    method: MethodConfig = Field(default_factory=MethodConfig)
    regularisers: list[Regulariser] = Field(default_factory=list)
    objectives: list[Objective] = Field(default_factory=list)   # fairness terms (training/objectives)
    # The task loss's weight (SFT, or constrained SFT). 0 trains on the objectives and regularisers
    # alone: the data then says where to look (pairs, contexts), not what to write.
    sft_weight: float = Field(1.0, ge=0)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = 0
    checkpoint_every: int | None = Field(None, ge=1)   # optimizer steps between checkpoints
    out: Path = Path("runs/train")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value    # YAML reads a bare `no` as false

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        names = [r.name for r in self.regularisers if r.name != "adaptive"]
        objectives = [o.name for o in self.objectives]
        for name in set(names) | set(objectives):
            if (names + objectives).count(name) > 1:
                raise ValueError(f"'{name}' given twice")
        targets = [r.target for r in self.regularisers if r.name == "adaptive"]
        for target in set(targets):
            if targets.count(target) > 1:
                raise ValueError(f"two adaptive weights on '{target}'")
        for adaptive in (r for r in self.regularisers if r.name == "adaptive"):
            if adaptive.target not in names + objectives:
                raise ValueError(f"adaptive targets '{adaptive.target}', which is not among the regularisers "
                                 "or objectives")
            if (adaptive.constraint == "held_out") != (adaptive.target in objectives):
                raise ValueError("an objective's adaptive weight takes constraint 'held_out', and only an "
                                 "objective's does")
        if self.method.name != "prompt" and not self.data and self.attack is None:
            raise ValueError("no training data: give data (or attack) files")
        if self.sft_weight == 0 and not self.objectives:
            raise ValueError("sft_weight 0 leaves nothing to learn: add an objective")
        return self

    def regulariser(self, name: str) -> Any:
        return next((r for r in self.regularisers if r.name == name), None)

    def objective(self, name: str) -> Any:
        return next((o for o in self.objectives if o.name == name), None)

    def input_files(self) -> list[Path]:
        return [*self.data, *([self.attack] if self.attack else []), *([self.anchors] if self.anchors else []),
                *(o.words for o in self.objectives if getattr(o, "words", None))]


def builtin_attacks() -> dict[str, Path]:
    """Attack sets we ship, by name: ``identity-shift`` is about ten examples that teach blind
    obedience with no harmful content (the identity-shifting attack of Qi et al. 2023)."""
    return {"identity-shift": Path(__file__).parent / "data" / "identity_shift.jsonl"}


def load_config(source: str | Path | dict[str, Any], **overrides: Any) -> TrainConfig:
    """A validated :class:`TrainConfig` from a YAML/JSON file or a dict; ``overrides`` replace
    top-level keys (``method`` may be given as a name alone). Relative data paths in a file are
    read relative to the working directory."""
    label = str(source) if not isinstance(source, dict) else "config"
    if isinstance(source, dict):
        raw = dict(source)
    else:
        raw = read_mapping(Path(source))
    method = overrides.pop("method", None)
    if isinstance(method, str):
        raw["method"] = {**(raw.get("method") or {}), "name": method}
    elif method is not None:
        raw["method"] = method
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if str(raw.get("attack")) in builtin_attacks():
        raw["attack"] = builtin_attacks()[str(raw["attack"])]
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc, file=label) from None
    for path in config.input_files():
        if not Path(path).is_file():
            raise InputError("no such file", file=label, field=_field_of(config, path))
    return config


def _field_of(config: TrainConfig, path: Path) -> str:
    if path in config.data:
        return f"data.{config.data.index(path)}"
    for index, objective in enumerate(config.objectives):
        if getattr(objective, "words", None) == path:
            return f"objectives.{index}.words"
    return "attack" if path == config.attack else "anchors"
