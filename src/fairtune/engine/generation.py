"""Batched, seeded generation through the tokenizer's chat template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fairtune.engine.device import model_device
from fairtune.engine.progress import progress_bar

Message = dict[str, str]

# Decoding a small model on a CPU is bound by the per-step overhead, not by arithmetic: on the
# embedded model (2 cores, 132 prompts, 48 new tokens) batches of 8 generate 69 tokens/s, of 32
# 144, of 64 156 (benchmarks/README.md). The token bound keeps long prompts or big models from
# holding a key/value cache of batch x (prompt + budget) tokens beyond reason.
DEFAULT_GENERATION_BATCH = 64
DEFAULT_GENERATION_BATCH_TOKENS = 16384


@dataclass
class Generation:
    """One reply. ``finish_reason`` is ``stop`` (end-of-turn token) or ``length`` (budget spent)."""

    messages: list[Message]
    prompt_text: str
    text: str
    n_new_tokens: int
    finish_reason: str


class GenerationEngine:
    """Generates replies in batches of similar prompt length, left-padded: at most ``batch_size``
    prompts, and at most ``max_batch_tokens`` of rows x (longest prompt + new tokens), though
    always at least one prompt."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = DEFAULT_GENERATION_BATCH,
                 max_new_tokens: int = 128, progress: bool = False,
                 max_batch_tokens: int = DEFAULT_GENERATION_BATCH_TOKENS):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_new_tokens, self.progress = batch_size, max_new_tokens, progress
        self.max_batch_tokens = max_batch_tokens

    @classmethod
    def from_loaded(cls, loaded: Any, **kwargs: Any) -> GenerationEngine:
        return cls(loaded.model, loaded.tokenizer, **kwargs)

    def render(self, messages: list[Message]) -> str:
        """The prompt as the model sees it: the chat template with the assistant turn opened.

        A tokenizer without a chat template (a base model) gets the user turns joined as plain text.
        """
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "\n\n".join(m["content"] for m in messages)

    def generate(self, prompts: Sequence[str | list[Message]], *, system: str | None = None,
                 do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.95,
                 seed: int = 0, max_new_tokens: int | None = None, prefill: str = "") -> list[Generation]:
        """Reply to each prompt (a user message, or a whole message list), in input order.

        Greedy by default; with ``do_sample`` the same seed and inputs give the same replies.
        ``prefill`` starts every assistant reply (the model continues it); the returned text
        includes it.
        """
        import torch

        conversations = [self._messages(p, system) for p in prompts]
        texts = [self.render(m) + prefill for m in conversations]
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]), reverse=True)
        results: list[Generation | None] = [None] * len(texts)
        budget = max_new_tokens or self.max_new_tokens
        eos = self._stop_ids()
        device = model_device(self.model)   # inputs go where the model is
        with progress_bar(self.progress) as bar:
            task = bar.add_task("generating", total=len(texts))
            for batch_no, batch in enumerate(self._batches(order, [len(e) for e in encoded], budget)):
                ids, mask = (t.to(device) for t in self._left_pad([encoded[i] for i in batch]))
                torch.manual_seed(seed + batch_no)
                with torch.inference_mode():
                    out = self.model.generate(
                        input_ids=ids, attention_mask=mask, max_new_tokens=budget, do_sample=do_sample,
                        temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                        top_k=None, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
                for row, index in enumerate(batch):
                    new = out[row, ids.shape[1]:].tolist()
                    stop = next((k for k, t in enumerate(new) if t in eos), None)
                    kept = new if stop is None else new[:stop]
                    results[index] = Generation(
                        conversations[index], texts[index],
                        (prefill + self.tokenizer.decode(kept, skip_special_tokens=True)).strip(),
                        len(kept), "length" if stop is None else "stop")
                bar.advance(task, len(batch))
        return results  # type: ignore[return-value]

    def _batches(self, order: list[int], lengths: list[int], budget: int) -> list[list[int]]:
        """``order`` (longest prompt first) cut into batches within both limits."""
        batches: list[list[int]] = []
        for index in order:
            batch = batches[-1] if batches else None
            if batch and len(batch) < self.batch_size and \
                    (len(batch) + 1) * (lengths[batch[0]] + budget) <= self.max_batch_tokens:
                batch.append(index)
            else:
                batches.append([index])
        return batches

    @staticmethod
    def _messages(prompt: str | list[Message], system: str | None) -> list[Message]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system is not None and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return sorted(i for i in ids if i is not None)

    def _left_pad(self, sequences: list[list[int]]):
        import torch

        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        return ids, mask
