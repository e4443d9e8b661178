"""What a fine-tuning method is: which weights train, what "the base model" means for it, and how
its result is saved and merged."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from fairtune.training.config import MethodConfig


class Method:
    """Base class; the default behaviour fits methods that train the model's own weights."""

    name: ClassVar[str]
    description: ClassVar[str]
    trains: ClassVar[bool] = True

    def __init__(self, config: MethodConfig):
        self.config = config
        self._start: dict[str, Any] = {}

    def prepare(self, model: Any) -> Any:
        """Make the right parameters trainable; return the model to train."""
        raise NotImplementedError

    def trainable(self, model: Any) -> dict[str, Any]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def snapshot(self, model: Any) -> None:
        """Remember the trainable weights' starting values (the base, for KL/L2-SP/EWC)."""
        self._start = {n: p.detach().clone() for n, p in self.trainable(model).items()}

    @contextlib.contextmanager
    def base_model(self, model: Any) -> Iterator[Any]:
        """The model as it was before training, without a second copy in memory: each trained
        weight's storage is swapped with its starting value's (no copying), and back afterwards."""
        params = self.trainable(model)
        for name, param in params.items():
            param.data, self._start[name] = self._start[name], param.data
        try:
            yield model
        finally:
            for name, param in params.items():
                param.data, self._start[name] = self._start[name], param.data

    def displacements(self, model: Any) -> Iterator[tuple[str, Any]]:
        """``(weight name, change since the start)`` for every weight training moves, with
        gradients (L2-SP and EWC penalise these)."""
        for name, param in self.trainable(model).items():
            yield name, param - self._start[name]

    def fisher_parameters(self, model: Any) -> dict[str, Any]:
        """The weights :meth:`displacements` names, whose Fisher information EWC needs."""
        return self.trainable(model)

    def save_adapter(self, model: Any, directory: Path) -> None:
        """The trained part alone (for methods that train the whole model: nothing extra)."""

    def merged(self, model: Any) -> Any:
        """A plain transformers model with the training folded in, for saving and inference."""
        return model
