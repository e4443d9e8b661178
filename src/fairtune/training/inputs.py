"""The files a training run reads: training data, an optional attack set, and the anchor set.

Everything is read and validated before the model loads; :meth:`TrainingInputs.encode` then
tokenises it, mixes anchors into the training data when ``safety_mix`` asks, and holds back a
few anchors for measuring constraints (``adaptive``) that never train.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairtune.curation.records import Record, is_context, is_unlikely, read_records
from fairtune.errors import InputError
from fairtune.io import sha256_file
from fairtune.training.config import TrainConfig
from fairtune.training.data import Example, encode_record

HELD_OUT_ANCHORS = 16


@dataclass
class EncodedInputs:
    train: list[Example]
    anchors: list[Example]
    held_out_anchors: list[Example]
    contexts: list[Example]      # ``loss: none`` records: what fairness objectives read, never learnt


@dataclass
class TrainingInputs:
    train: list[Record]
    attack: list[Record]
    anchors: list[Record]
    anchor_source: str
    anchor_sha256: str
    files: list[dict[str, Any]]

    def encode(self, tokenizer: Any, config: TrainConfig) -> EncodedInputs:
        """The training examples, anchors (some held out) and neutral contexts, tokenised."""
        max_length = config.optim.max_length
        contexts = [encode_record(r, tokenizer, max_length=max_length, origin="context")
                    for r in self.train if is_context(r)]
        examples = [encode_record(r, tokenizer, max_length=max_length) for r in self.train if not is_context(r)]
        examples += [encode_record(r, tokenizer, max_length=max_length, origin="attack") for r in self.attack]
        anchors = [encode_record(r, tokenizer, max_length=max_length, origin="anchor") for r in self.anchors]
        random.Random(config.seed).shuffle(anchors)
        held_out = anchors[:HELD_OUT_ANCHORS] if len(anchors) > 2 * HELD_OUT_ANCHORS else []
        anchors = anchors[len(held_out):]
        mix = config.regulariser("safety_mix")
        if mix is not None:
            count = mix.count if mix.count is not None else round(mix.share * len(examples))
            rng = random.Random(config.seed + 1)
            # More than the anchor set holds: cycle through it (each pass seeded).
            chosen = [anchors[i % len(anchors)] for i in rng.sample(range(len(anchors)), min(count, len(anchors)))]
            chosen += [rng.choice(anchors) for _ in range(count - len(chosen))]
            examples += chosen
        return EncodedInputs([e for e in examples if e.n_labelled], anchors, held_out, contexts)

    @staticmethod
    def counts(examples: list[Example]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for example in examples:
            counts[example.origin] = counts.get(example.origin, 0) + 1
        return counts

    def sources(self) -> list[dict[str, Any]]:
        return [*self.files, {"role": "anchors", "source": self.anchor_source, "sha256": self.anchor_sha256,
                              "records": len(self.anchors)}]


def prepare_inputs(config: TrainConfig) -> TrainingInputs:
    from fairtune.curation.safety import BUILTIN_SOURCE, builtin_anchor_path, load_anchors

    train, files = [], []
    for path in config.data:
        records = _check_unlikely(read_records(path), path, config)
        train += records
        files.append({"role": "train", "source": str(path), "sha256": sha256_file(path), "records": len(records)})
    attack = _check_unlikely(read_records(config.attack), config.attack, config) if config.attack else []
    if config.attack:
        files.append({"role": "attack", "source": str(config.attack), "sha256": sha256_file(config.attack),
                      "records": len(attack)})
    _check_objectives(config, train)
    anchor_path = Path(config.anchors) if config.anchors else builtin_anchor_path()
    anchors = load_anchors(config.anchors)
    return TrainingInputs(train, attack, anchors, str(config.anchors) if config.anchors else BUILTIN_SOURCE,
                          sha256_file(anchor_path), files)


def _check_unlikely(records: list[Record], path: Path, config: TrainConfig) -> list[Record]:
    """``records``, unless one is marked ``loss: unlikelihood`` and no regulariser would train it
    (it would leave the task loss and go nowhere)."""
    if config.regulariser("unlikelihood") is None:
        row = next((i for i, r in enumerate(records, 1) if is_unlikely(r)), None)
        if row is not None:
            raise InputError("a 'loss: unlikelihood' record needs the 'unlikelihood' regulariser",
                             file=path, row=row, field="loss")
    return records


def _check_objectives(config: TrainConfig, records: list[Record]) -> None:
    """Each fairness objective finds rows it can read in the training data, or fails in one line."""
    from fairtune.models.loader import layer_count
    from fairtune.training.objectives import OBJECTIVES

    layers = layer_count(config.model) if any(hasattr(o, "layer") for o in config.objectives) else None
    for index, objective in enumerate(config.objectives):
        OBJECTIVES[objective.name].check_records(objective, records, f"objectives.{index}")
        if layers is not None:
            OBJECTIVES[objective.name].check_model(objective, layers, f"objectives.{index}")
