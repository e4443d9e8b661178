"""The adaptive weight: a Lagrange multiplier on one regulariser.

Every ``every`` steps the constraint is measured on a fixed held-back anchor batch (anchor KL to
the base, or the rise in anchor NLL over the base's); the weight takes a projected dual-ascent
step, weight <- clip(weight + step_size * (measured - budget), 0, max_weight): it rises while the
constraint is violated and falls once it holds. Its path is logged every step.
"""

from __future__ import annotations

from typing import Any


class AdaptiveWeight:
    def __init__(self, config: Any, target: Any):
        self.config, self.target = config, target
        self.last_measured: float | None = None

    def due(self, step: int) -> bool:
        return step % self.config.every == 0

    def update(self, measured: float) -> float:
        c = self.config
        self.last_measured = measured
        self.target.weight = min(c.max_weight, max(0.0, self.target.weight + c.step_size * (measured - c.budget)))
        return self.target.weight

    def state(self) -> dict[str, Any]:
        return {"weight": self.target.weight, "last_measured": self.last_measured}

    def load_state(self, state: dict[str, Any]) -> None:
        self.target.weight, self.last_measured = state["weight"], state["last_measured"]
