"""Model specs and the one loader every stage uses."""

from fairtune.models.loader import LoadedModel, load_model
from fairtune.models.spec import ModelSpec, resolve_model_spec

__all__ = ["LoadedModel", "ModelSpec", "load_model", "resolve_model_spec"]
