"""Norm-only tuning: only the normalisation layers' weights (and biases) train; for a Llama-style
model that is well under 1% of the parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairtune.training.methods.base import Method


def is_norm_parameter(name: str) -> bool:
    leaf = name.lower().rsplit(".", 2)
    return any("norm" in part or part.startswith("ln_") for part in leaf[:-1])


class NormMethod(Method):
    name = "norm"
    description = "only normalisation weights train"

    def prepare(self, model: Any) -> Any:
        model.requires_grad_(False)
        found = 0
        for name, param in model.named_parameters():
            if is_norm_parameter(name):
                param.requires_grad_(True)
                found += 1
        if not found:
            raise ValueError("the model has no parameters named like normalisation layers")
        return model

    def save_adapter(self, model: Any, directory: Path) -> None:
        from safetensors.torch import save_file

        tensors = {n: p.detach().contiguous() for n, p in self.trainable(model).items()}
        save_file(tensors, str(directory / "norm_weights.safetensors"))
