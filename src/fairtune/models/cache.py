"""The user cache: GGUF files converted once to safetensors, and weight fingerprints.

De-quantising the embedded GGUF takes ~17 s on 2 cores; loading the same weights from
safetensors takes ~2 s, so the first load converts and every later load reads the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fairtune.io import sha256_file, write_json

CONVERTED_MARKER = "fairtune-source.json"


def cache_root() -> Path:
    """``$FAIRTUNE_CACHE``, else ``$XDG_CACHE_HOME/fairtune``, else ``~/.cache/fairtune``."""
    if env := os.environ.get("FAIRTUNE_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "fairtune"


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so big weights are hashed once."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_path = cache_root() / "fingerprints.json"
    memo = _read_memo(memo_path)
    if key in memo:
        return memo[key]
    digest = sha256_file(path)
    try:
        from filelock import FileLock

        memo_path.parent.mkdir(parents=True, exist_ok=True)
        # Read, add, write under a lock: two processes fingerprinting at once would each write
        # the memo they read and drop the other's entry.
        with FileLock(str(memo_path) + ".lock", timeout=60):
            memo = _read_memo(memo_path)
            memo[key] = digest
            write_json(memo_path, memo)
    except OSError:
        pass  # a read-only or busy cache only costs a re-hash next time
    return digest


def _read_memo(memo_path: Path) -> dict[str, str]:
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def dir_fingerprint(directory: str | Path) -> str:
    """One sha256 over the sha256 of every safetensors weight file in a model directory."""
    import hashlib

    files = sorted(Path(directory).glob("*.safetensors"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_fingerprint(file)}\n".encode())
    return digest.hexdigest()


def converted_gguf_dir(gguf_path: str | Path, fingerprint: str) -> Path:
    return cache_root() / "models" / f"{Path(gguf_path).stem}-{fingerprint[:16]}"


def convert_gguf_to_safetensors(gguf_path: str | Path, fingerprint: str, *,
                                trust_remote_code: bool = False) -> Path:
    """De-quantise a GGUF file into a safetensors model directory in the cache (once).

    The directory is built under a temporary name and renamed into place, so an interrupted
    conversion is never mistaken for a finished one.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_gguf_dir(gguf_path, fingerprint)
    if (target / CONVERTED_MARKER).is_file():
        return target
    gguf_path = Path(gguf_path)
    print(f"fairtune: converting {gguf_path.name} to safetensors once, into {target} "
          "(later loads take seconds)", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        kwargs = dict(gguf_file=gguf_path.name, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kwargs)
        # The weights are de-quantised float32 now; drop the GGUF quantiser so they save
        # (and later load) as an ordinary float model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / CONVERTED_MARKER, {"gguf": str(gguf_path), "sha256": fingerprint})
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / CONVERTED_MARKER).is_file():  # not a concurrent conversion: real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
