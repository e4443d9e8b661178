"""L2-SP: squared distance of the trained weights from their starting point (for LoRA, of the
adapter's change to each base weight)."""

from __future__ import annotations

from typing import Any

from fairtune.training.regularisers.base import Regulariser, StepOutputs


class L2SP(Regulariser):
    name = "l2sp"

    def penalty(self, model: Any, outputs: StepOutputs) -> Any:
        return sum((delta.float().pow(2).sum() for _, delta in self.context.method.displacements(model)))
