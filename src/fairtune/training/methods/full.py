"""Full fine-tuning: every weight trains (the most capacity, and the most to forget)."""

from __future__ import annotations

from typing import Any

from fairtune.training.methods.base import Method


class FullMethod(Method):
    name = "full"
    description = "every weight trains"

    def prepare(self, model: Any) -> Any:
        model.requires_grad_(True)
        return model
