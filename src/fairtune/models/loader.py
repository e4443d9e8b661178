"""Load any model spec into a (model, tokenizer) pair, the same way for every stage."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fairtune.errors import ModelError
from fairtune.models.cache import convert_gguf_to_safetensors, dir_fingerprint, file_fingerprint
from fairtune.models.spec import EMBEDDED_DESCRIPTION, ModelSpec, resolve_model_spec

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


@dataclass
class LoadedModel:
    """A causal LM ready for the engines, with what a run summary must record about it."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    fingerprint: str
    dtype: str
    source: str
    load_seconds: float

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec.raw,
            "kind": self.spec.kind,
            "location": self.spec.path,
            "description": EMBEDDED_DESCRIPTION if self.spec.kind == "embedded" else None,
            "loaded_from": self.source,
            "fingerprint": self.fingerprint,
            "dtype": self.dtype,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


def parse_dtype(name: str) -> str:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ModelError(f"dtype '{name}': unknown (use float32 or bfloat16)") from None


def load_model(spec: str | ModelSpec = "embedded", *, dtype: str = "float32",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load ``spec`` (see :func:`resolve_model_spec`) in ``dtype``, in eval mode.

    GGUF files are de-quantised once into the fairtune cache and read from there after.
    ``trust_remote_code`` stays off unless the caller turns it on.
    """
    from transformers.utils import logging as hf_logging

    if isinstance(spec, str):
        spec = resolve_model_spec(spec)
    dtype = parse_dtype(dtype)
    hf_logging.disable_progress_bar()  # per-tensor bars for a 2-second load are noise
    started = time.perf_counter()
    if spec.is_gguf:
        fingerprint = file_fingerprint(spec.path)
        try:
            source = convert_gguf_to_safetensors(spec.path, fingerprint, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"{spec.path}: cannot read GGUF model: {_first_line(exc)}") from exc
        model, tokenizer = _from_pretrained(str(source), dtype, trust_remote_code, local_only=True)
    elif spec.kind == "dir":
        if not any(Path(spec.path).glob("*.safetensors")):
            raise ModelError(f"{spec.path}: no *.safetensors weights; fairtune does not unpickle "
                             ".bin checkpoints (convert them to safetensors first)")
        fingerprint = dir_fingerprint(spec.path)
        source = spec.path
        model, tokenizer = _from_pretrained(source, dtype, trust_remote_code, local_only=True)
    else:
        model, tokenizer = _load_from_hub(spec.path, dtype, trust_remote_code)
        commit = getattr(model.config, "_commit_hash", None) or "unknown-revision"
        fingerprint, source = f"hf:{spec.path}@{commit}", spec.path
    if tokenizer.pad_token_id is None:
        # Padded positions are masked out of every score; any real id will do.
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model, tokenizer, spec, fingerprint, dtype, str(source),
                       round(time.perf_counter() - started, 3))


def _from_pretrained(location: str, dtype: str, trust_remote_code: bool, *, local_only: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(trust_remote_code=trust_remote_code, local_files_only=local_only)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=getattr(torch, dtype), use_safetensors=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if not local_only:
            raise
        raise ModelError(f"{location}: cannot load model: {_first_line(exc)}") from exc
    return model, tokenizer


def _load_from_hub(model_id: str, dtype: str, trust_remote_code: bool):
    try:  # a copy already in the Hugging Face cache needs no network
        return _from_pretrained(model_id, dtype, trust_remote_code, local_only=True)
    except ModelError:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        raise ModelError(
            f"model '{model_id}': not in the local Hugging Face cache and the hub cannot be reached; "
            f"download it where you have network (hf download {model_id} --local-dir DIR) and pass --model DIR")
    try:
        return _from_pretrained(model_id, dtype, trust_remote_code, local_only=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"model '{model_id}': cannot load from the hub: {_first_line(exc)}") from exc


def _hub_reachable(timeout: float = 3.0) -> bool:
    # huggingface_hub retries an unreachable host for ~50 s; one quick TCP probe decides first.
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def layer_count(spec: str | ModelSpec) -> int | None:
    """The number of transformer layers, read from the model's config without loading its
    weights: a directory's ``config.json``, a GGUF file's ``<arch>.block_count``; None for a hub
    id (its config may not be here)."""
    import json

    if isinstance(spec, str):
        spec = resolve_model_spec(spec)
    if spec.is_gguf:
        from gguf import GGUFReader

        fields = GGUFReader(str(spec.path)).fields
        value = lambda name: fields[name].parts[fields[name].data[0]]  # noqa: E731
        return int(value(f"{bytes(value('general.architecture')).decode()}.block_count")[0])
    if spec.kind == "dir":
        config = json.loads((Path(spec.path) / "config.json").read_text())
        count = config.get("num_hidden_layers", config.get("n_layer"))
        return int(count) if count is not None else None
    return None
