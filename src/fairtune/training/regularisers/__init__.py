"""Regularisers that keep a model's safety and knowledge while it is tuned, by name."""

from __future__ import annotations

from fairtune.training.regularisers.adaptive import AdaptiveWeight
from fairtune.training.regularisers.base import Context, Regulariser, StepOutputs, token_mean
from fairtune.training.regularisers.constrained import Constrained
from fairtune.training.regularisers.ewc import EWC
from fairtune.training.regularisers.kl_to_base import KlToBase, token_kl
from fairtune.training.regularisers.l2sp import L2SP
from fairtune.training.regularisers.unlikelihood import Unlikelihood

# safety_mix acts on the data and adaptive on another term's weight; they have no loss term.
REGULARISERS: dict[str, type[Regulariser]] = {cls.name: cls for cls in (KlToBase, L2SP, EWC, Constrained,
                                                                         Unlikelihood)}

__all__ = ["REGULARISERS", "AdaptiveWeight", "Context", "Regulariser", "StepOutputs", "token_kl", "token_mean"]
