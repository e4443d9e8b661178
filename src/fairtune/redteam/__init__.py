"""Red-teaming: prompt transforms that reproduce published jailbreak families (see ``transforms``)."""

from fairtune.redteam.transforms import (BASELINE, TRANSFORMS, Message, Prompt, Transform, get_transform,
                                         prompt_text, register_transform, transform_names)

__all__ = ["BASELINE", "TRANSFORMS", "Message", "Prompt", "Transform", "get_transform", "prompt_text",
           "register_transform", "transform_names"]
