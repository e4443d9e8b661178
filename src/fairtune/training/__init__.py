"""Fine-tuning: methods (LoRA, DoRA, norm-only, full, prompt-only), regularisers that keep safety
and knowledge, checkpoints, and the loop that ties them together (on accelerate)."""

from fairtune.training.config import TrainConfig, load_config
from fairtune.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_config", "train"]
