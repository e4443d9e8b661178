"""Where a model's weights live, so inputs can be sent there (a model moved to a GPU by the user)."""

from __future__ import annotations

from typing import Any


def model_device(model: Any) -> Any:
    """The device of ``model``'s first parameter; CPU for a model without parameters."""
    import torch

    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return param.device if param is not None else torch.device("cpu")
