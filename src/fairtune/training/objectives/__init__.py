"""Fairness objectives: training terms that ask for unbiased behaviour, by name (one module each)."""

from __future__ import annotations

from fairtune.training.objectives.adversarial import Adversarial
from fairtune.training.objectives.attribute_equalisation import AttributeEqualisation
from fairtune.training.objectives.base import Objective, ObjectiveContext
from fairtune.training.objectives.counterfactual_pairing import CounterfactualPairing

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (CounterfactualPairing, AttributeEqualisation,
                                                                    Adversarial)}

__all__ = ["OBJECTIVES", "Objective", "ObjectiveContext"]
