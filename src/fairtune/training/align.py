"""The safety alignment stage: give guardrails to a model that has none.

SmolLM2-135M-Instruct complies with clearly harmful requests, so a study of whether debiasing
keeps guardrails must first give it some. This is LoRA SFT on the safety anchor set (refusals
for harmful requests, helpful answers for benign ones), merged. The helpful answers are repeated
``helpful_weight`` times: a small model learns the short, formulaic refusals much faster than
the varied answers, and without the extra weight it refuses anything that sounds dangerous
("kill a process"). ``general`` replies that the model itself gives to neutral prompts
(:mod:`fairtune.curation.selfgen`) are mixed in as well: safety data that is a small share of
ordinary helpful data over-refuses less (Bianchi et al. 2024, "Safety-Tuned LLaMAs"), and the
model's own replies cost it nothing in knowledge. With ``refusal_unlikelihood`` > 0 each helpful
anchor is also paired with a refusal opener as text *not* to write (token-level unlikelihood,
Welleck et al. 2019): SFT alone only shows where refusing is right, so the model learns to refuse
on alarming words ("kill the dragon boss") rather than on harm. The result is cached by the hash
of everything it depends on and built once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairtune.training.config import TrainConfig, load_config

ALIGN_VERSION = 3   # bump when the recipe below changes, so old caches are not reused

# The default recipe, shared by the API, the CLI and pipeline recipes: the setting that met both
# targets on the embedded model (refusal >= 0.90, over-refusal <= 0.15; README, "Guardrails").
DEFAULT_EPOCHS = 3
DEFAULT_LR = 2e-3
DEFAULT_RANK = 16
DEFAULT_HELPFUL_WEIGHT = 2
DEFAULT_REFUSAL_UNLIKELIHOOD = 0.1

# Unlikelihood on the first token only ("I", "Sorry"): the words after it are shared with real
# refusals, and on the whole opener the embedded model learnt "I can help" after harmful requests.
UNLIKELY_FIRST_TOKENS = 1

# How the aligned model starts a refusal; paired with benign prompts as what not to write.
REFUSAL_OPENERS = ("I can't help with that.", "I won't help with that.", "Sorry, but I can't help with that.",
                   "I can't assist with that request.")


@dataclass
class AlignResult:
    merged_dir: Path
    run_dir: Path
    cached: bool
    manifest: dict[str, Any]


def align_config(model: str, data: Path, anchors: str | Path | None, *, epochs: int, lr: float, rank: int,
                 seed: int, out: Path, benign_kl: float = 0.0, refusal_unlikelihood: float = 0.0) -> TrainConfig:
    # benign_kl > 0: KL to the base model on the helpful anchors only, where the base model's
    # answers are what we want kept (it complies with benign requests).
    regularisers = [{"name": "kl_to_base", "weight": benign_kl}] if benign_kl else []
    if refusal_unlikelihood:
        regularisers.append({"name": "unlikelihood", "weight": refusal_unlikelihood,
                             "first_tokens": UNLIKELY_FIRST_TOKENS})
    return load_config({
        "model": model, "data": [str(data)], "anchors": str(anchors) if anchors else None, "seed": seed,
        "out": str(out), "regularisers": regularisers,
        "method": {"name": "lora", "rank": rank, "alpha": 2 * rank, "dropout": 0.05},
        "optim": {"lr": lr, "epochs": epochs, "batch_tokens": 2048, "schedule": "linear", "warmup_steps": 5},
        "checkpoint_every": 20,
    })


def model_fingerprint(model: str) -> str:
    """The model's identity without loading it (file hashes for local models, the id for hub ones)."""
    from fairtune.models.cache import dir_fingerprint, file_fingerprint
    from fairtune.models.spec import resolve_model_spec

    spec = resolve_model_spec(model)
    if spec.is_gguf:
        return file_fingerprint(spec.path)
    if spec.kind == "dir":
        return dir_fingerprint(spec.path)
    return f"hub:{spec.path}"


def align(model: str = "embedded", *, anchors: str | Path | None = None, epochs: int = DEFAULT_EPOCHS,
          lr: float = DEFAULT_LR, rank: int = DEFAULT_RANK, helpful_weight: int = DEFAULT_HELPFUL_WEIGHT, general: int = 0,
          benign_kl: float = 0.0, refusal_unlikelihood: float = DEFAULT_REFUSAL_UNLIKELIHOOD, seed: int = 0,
          progress: bool = False) -> AlignResult:
    """The aligned (merged) model for ``model``, trained now or taken from the cache."""
    from fairtune.curation.safety import HELPFUL_KIND, builtin_anchor_path, load_anchors
    from fairtune.io import sha256_file, write_jsonl
    from fairtune.models.cache import cache_root
    from fairtune.training.trainer import MANIFEST_FILE, train

    source = Path(anchors) if anchors else builtin_anchor_path()
    records = load_anchors(anchors)               # validates a user's file before anything else
    settings = {"epochs": epochs, "lr": lr, "rank": rank, "helpful_weight": helpful_weight, "general": general,
                "benign_kl": benign_kl, "seed": seed}
    if refusal_unlikelihood:   # only when set, so the caches built before it stay valid
        settings.update(refusal_unlikelihood=refusal_unlikelihood, unlikely_first_tokens=UNLIKELY_FIRST_TOKENS)
    key_source = {"version": ALIGN_VERSION, "model": model_fingerprint(model), "anchors": sha256_file(source),
                  **settings}
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:20]
    run_dir = cache_root() / "aligned" / key
    manifest_path = run_dir / MANIFEST_FILE
    if manifest_path.exists():
        return AlignResult(run_dir / "merged", run_dir, True, json.loads(manifest_path.read_text()))
    data = run_dir / "align_data.jsonl"
    if not data.exists():
        weighted = [r for r in records for _ in range(helpful_weight if r["meta"]["kind"] == HELPFUL_KIND else 1)]
        if general:
            from fairtune.curation.selfgen import generate_corpus
            from fairtune.models import load_model

            replies, _ = generate_corpus(load_model(model), n=general, seed=seed, progress=progress)
            weighted += replies
        if refusal_unlikelihood:
            weighted += unlikely_refusals(records)
        write_jsonl(data, weighted)
    benign = run_dir / "benign_anchors.jsonl"
    if benign_kl and not benign.exists():
        write_jsonl(benign, [r for r in records if r["meta"]["kind"] == HELPFUL_KIND])
    config = align_config(model, data, benign if benign_kl else anchors, epochs=epochs, lr=lr, rank=rank,
                          seed=seed, out=run_dir, benign_kl=benign_kl, refusal_unlikelihood=refusal_unlikelihood)
    result = train(config, progress=progress)   # resumes from a checkpoint if an earlier build was cut off
    return AlignResult(result.merged_dir, run_dir, False, result.manifest)


def unlikely_refusals(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each helpful anchor's prompt with a refusal opener as its unlikely reply (openers in turn)."""
    from fairtune.curation.safety import HELPFUL_KIND

    helpful = [r for r in records if r["meta"]["kind"] == HELPFUL_KIND]
    rows = []
    for index, record in enumerate(helpful):
        opener = REFUSAL_OPENERS[index % len(REFUSAL_OPENERS)]
        body = ({"messages": [*record["messages"][:-1], {"role": "assistant", "content": opener}]}
                if "messages" in record else {"prompt": record["prompt"], "completion": opener})
        rows.append({"id": f"{record['id']}-unlikely", "loss": "unlikelihood", **body,
                     "meta": {**record["meta"], "kind": "unlikely-refusal"}})
    return rows
