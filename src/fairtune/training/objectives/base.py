"""What a fairness objective is: a named training term with a weight, like a regulariser, that
reads rows of its own kind.

A regulariser keeps what the model knew (safety, knowledge); an objective asks for a behaviour
the data alone does not teach: that a text's continuation not depend on gender words
(``counterfactual_pairing``), that a neutral context not prefer "he" over "she"
(``attribute_equalisation``), that a hidden state not encode a context's stereotyped gender
(``adversarial``). Each objective

- checks the training records before any model loads (:meth:`Objective.check_records`: no pairs,
  no contexts, one line naming the field),
- may hold back a few of its rows that never train (:meth:`Objective.hold_back`), on which
  :meth:`Objective.measure` reports its value for an ``adaptive`` weight,
- computes its term each micro-batch (:meth:`Objective.penalty`), from the training rows' own
  forward pass (pairs travel in one batch) or from a pass over its own rows, chosen from the
  micro-batch's position alone, so a resumed run sees the same rows,
- may train parameters of its own (the adversary's probe) and keep them in checkpoints.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from fairtune.errors import InputError


@dataclass
class ObjectiveContext:
    """What objectives may use besides the model."""

    tokenizer: Any
    pad_id: int
    seed: int
    field: str                 # where the objective sits in the config, for error messages


class Objective:
    name: ClassVar[str]
    pairs_in_batches: ClassVar[bool] = False   # counterfactual partners share a training batch

    def __init__(self, config: Any, context: ObjectiveContext):
        self.config, self.context = config, context
        self.weight = float(config.weight)
        self.last: dict[str, float] = {}        # extra values of the last penalty, for the log

    @classmethod
    def check_records(cls, config: Any, records: list[dict], field: str) -> None:
        """Fail before the model loads when the data holds nothing this objective can read."""

    @classmethod
    def check_model(cls, config: Any, layers: int, field: str) -> None:
        """Fail before the weights load when the config does not fit a model of ``layers`` layers."""

    def hold_back(self, examples: list, contexts: list) -> tuple[set[int], set[int]]:
        """Indices of training examples and of contexts kept out of training for :meth:`measure`."""
        return set(), set()

    def setup(self, model: Any, examples: list, contexts: list, held_examples: list, held_contexts: list) -> None:
        """One-off work once the rows are final (indices refer to these lists; the held-back rows
        are those :meth:`hold_back` chose, for :meth:`measure`)."""

    def units(self, examples: list) -> list[list[int]] | None:
        """Groups of training example indices that must share a batch, or None."""
        return None

    def penalty(self, model: Any, outputs: Any) -> Any:
        raise NotImplementedError

    def measure(self, model: Any) -> float:
        """The term's value on the held-back rows (no gradient), for an ``adaptive`` weight."""
        raise NotImplementedError

    def parameters(self) -> list:
        """Parameters the objective trains itself (they join the optimizer as their own group)."""
        return []

    def param_group(self) -> dict[str, Any] | None:
        params = self.parameters()
        return {"params": params, "weight_decay": 0.0} if params else None

    def state_tensors(self) -> dict[str, Any]:
        """Tensors a checkpoint must keep for a resumed run to match an uninterrupted one."""
        return {}

    def load_state_tensors(self, tensors: dict[str, Any]) -> None:
        pass


def fail(message: str, field: str) -> InputError:
    return InputError(message, field=field)


def cyclic_batch(order: list[int], position: int, size: int) -> list[int]:
    """The ``position``-th batch of ``size`` indices taken cyclically from ``order``."""
    start = (position * size) % len(order)
    return [order[(start + k) % len(order)] for k in range(min(size, len(order)))]


def seeded_order(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def context_examples(contexts: list, axis: str) -> list[int]:
    """Indices of the context examples that belong to ``axis`` (those naming no axis count for any)."""
    return [i for i, e in enumerate(contexts) if e.axis in (None, axis)]


def record_axis_contexts(records: list[dict], axis: str) -> list[dict]:
    from fairtune.curation.records import is_context, meta

    return [r for r in records if is_context(r) and meta(r).get("axis") in (None, axis)]


def forward_rows(model: Any, rows: list[list[int]], pad_id: int, *, hidden_states: bool = False) -> Any:
    """One forward pass over right-padded token rows; returns the model output and the mask."""
    import torch

    from fairtune.engine.device import model_device

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    device = model_device(model)
    ids, mask = ids.to(device), mask.to(device)
    output = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden_states)
    return output, ids, mask
