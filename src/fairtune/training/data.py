"""Training records -> token ids with loss labels -> length-bucketed batches.

Loss goes only where the model should learn to write: assistant turns of chat records (their
end-of-turn token included, so the model learns to stop), the completion of prompt/completion
records, everything of plain text. Other positions get label -100.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from fairtune.curation.records import Record, is_context, is_unlikely, meta, record_format

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    origin: str            # "train", "attack" or "anchor"
    truncated: bool = False
    unlikely: bool = False  # labelled tokens are to be made unlikely (the unlikelihood regulariser)
    # What fairness objectives read from the record's meta: its counterfactual group and attribute
    # values (pairs), and for a neutral context (``loss: none``) its stereotyped association.
    group: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    association: dict[str, str] = field(default_factory=dict)
    axis: str | None = None

    @property
    def n_labelled(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def text_prefix(tokenizer: Any) -> list[int]:
    # The scoring engine's convention: BOS conditions the first word, else EOS (SmolLM2 has no BOS).
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [token] if token is not None else []


def encode_record(record: Record, tokenizer: Any, *, max_length: int, origin: str = "train") -> Example:
    body = record_format(record)
    if body == "messages":
        ids, labels = _encode_chat(record["messages"], tokenizer)
    elif body == "prompt":
        prompt = text_prefix(tokenizer) + tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
        completion = tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            completion = completion + [tokenizer.eos_token_id]
        ids, labels = prompt + completion, [IGNORE] * len(prompt) + completion
    else:
        ids = text_prefix(tokenizer) + tokenizer(record["text"], add_special_tokens=False)["input_ids"]
        labels = [IGNORE] + ids[1:] if ids else []
    if is_context(record):
        labels = [IGNORE] * len(ids)   # read by objectives, never learnt
    truncated = len(ids) > max_length
    info = meta(record)
    group = info.get("group")
    return Example(ids[:max_length], labels[:max_length], origin, truncated, is_unlikely(record),
                   str(group) if group is not None else None, _strings(info.get("attributes")),
                   _strings(info.get("association")), info.get("axis"))


def _strings(mapping: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in mapping.items()} if isinstance(mapping, dict) else {}


def _encode_chat(messages: list[dict[str, str]], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Render the whole conversation once; label the tokens whose characters fall inside an
    assistant turn. Turn boundaries come from rendering prefixes of the conversation, which is
    exact for any template that renders turns in order (every chat template we know)."""
    render = lambda msgs, gen=False: tokenizer.apply_chat_template(  # noqa: E731
        msgs, tokenize=False, add_generation_prompt=gen)
    full = render(messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            start = len(render(messages[:index], gen=True)) if index else 0
            spans.append((start, len(render(messages[:index + 1]))))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    labels = [token if any(s <= begin < e for s, e in spans) else IGNORE
              for token, (begin, _end) in zip(ids, encoded["offset_mapping"])]
    return ids, labels


def plan_batches(examples: list[Example], *, batch_tokens: int, seed: int, epoch: int,
                 units: list[list[int]] | None = None) -> list[list[int]]:
    """Indices of ``examples`` grouped into batches of similar length under a padded-token budget,
    batch order shuffled by (seed, epoch): little compute goes to padding, and a resumed run
    sees exactly the batches an uninterrupted one would. ``units`` (lists of indices, default one
    example each) are never split across batches: a counterfactual pair trains in one batch."""
    rng = random.Random(seed * 100_003 + epoch)
    units = units if units is not None else [[i] for i in range(len(examples))]
    width = [max(len(examples[i].input_ids) for i in unit) for unit in units]
    order = sorted(range(len(units)), key=lambda u: (width[u], rng.random()))
    batches, current, longest = [], [], 0
    for unit in order:
        length = width[unit]
        if current and max(longest, length) * (len(current) + len(units[unit])) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.extend(units[unit])
        longest = max(longest, length)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int, device: Any = None):
    """Right-padded tensors: input_ids, attention_mask, labels, and ``unlikely`` (one flag per row),
    on ``device`` (the model's: on a GPU, CPU tensors would fail the forward pass)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    unlikely = torch.tensor([e.unlikely for e in examples], dtype=torch.bool)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "unlikely": unlikely}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def padding_share(examples: list[Example], batches: list[list[int]]) -> float:
    real = sum(len(examples[i].input_ids) for b in batches for i in b)
    padded = sum(max(len(examples[i].input_ids) for i in b) * len(b) for b in batches)
    return 1 - real / padded if padded else 0.0
