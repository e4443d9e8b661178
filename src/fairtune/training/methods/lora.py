"""LoRA and DoRA through peft: low-rank adapters on the chosen linear layers, merged back after
training so inference costs nothing extra."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fairtune.training.methods.base import Method

# Attention and MLP projections by architecture: adapting all of them (not only q/v, peft's
# default) is what QLoRA found to match full fine-tuning.
DEFAULT_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def default_targets(model: Any) -> list[str] | str:
    return DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""), "all-linear")


class LoraMethod(Method):
    name = "lora"
    description = "low-rank adapters (peft), merged after training"
    use_dora = False

    def prepare(self, model: Any) -> Any:
        import warnings

        from peft import LoraConfig, get_peft_model

        # peft 0.21 calls a transformers method that 5.x deprecates; nothing for users to act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

        model.requires_grad_(False)
        config = LoraConfig(r=self.config.rank, lora_alpha=self.config.alpha, lora_dropout=self.config.dropout,
                            target_modules=self.config.target_modules or default_targets(model),
                            use_dora=self.use_dora, task_type="CAUSAL_LM")
        return get_peft_model(model, config)

    def snapshot(self, model: Any) -> None:
        """Nothing to copy: the base is the same model with its adapters switched off."""

    def base_model(self, model: Any) -> contextlib.AbstractContextManager:
        return _unwrap(model).disable_adapter()

    def _lora_layers(self, model: Any) -> Iterator[tuple[str, Any]]:
        from peft.tuners.lora import LoraLayer

        for name, module in _unwrap(model).named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                yield name, module

    def displacements(self, model: Any) -> Iterator[tuple[str, Any]]:
        # The adapter's change to each base weight, B @ A * scaling (DoRA's magnitude rescaling
        # is left out: it is a per-row scale of the same change).
        for name, module in self._lora_layers(model):
            yield f"{name}.base_layer.weight", module.get_delta_weight("default")

    def fisher_parameters(self, model: Any) -> dict[str, Any]:
        return {f"{name}.base_layer.weight": module.base_layer.weight for name, module in self._lora_layers(model)}

    def save_adapter(self, model: Any, directory: Path) -> None:
        _unwrap(model).save_pretrained(str(directory))

    def merged(self, model: Any) -> Any:
        return _unwrap(model).merge_and_unload()


class DoraMethod(LoraMethod):
    name = "dora"
    description = "weight-decomposed low-rank adapters (peft use_dora), merged after training"
    use_dora = True


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)   # DistributedDataParallel wraps the peft model
