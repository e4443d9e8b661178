"""Fine-tuning methods, one module each, registered by name (peft's layout)."""

from __future__ import annotations

from fairtune.training.config import MethodConfig
from fairtune.training.methods.base import Method
from fairtune.training.methods.full import FullMethod
from fairtune.training.methods.lora import DoraMethod, LoraMethod
from fairtune.training.methods.norm import NormMethod
from fairtune.training.methods.prompt import PromptMethod

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (LoraMethod, DoraMethod, NormMethod, FullMethod,
                                                              PromptMethod)}


def get_method(config: MethodConfig) -> Method:
    return METHODS[config.name](config)


__all__ = ["METHODS", "Method", "get_method"]
