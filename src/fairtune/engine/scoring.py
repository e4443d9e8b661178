"""Log-likelihood of texts, and of continuations given contexts, in length-bucketed batches.

Conventions, stated because they decide what the first word is conditioned on:

- Text is encoded without special tokens; the engine adds them itself.
- An empty context is replaced by one *prefix token* so that the first token of the text is
  scored too: by default the tokenizer's BOS token, else its EOS token (exactly what
  lm-evaluation-harness does, so CrowS-Pairs numbers agree with it). SmolLM2's tokenizer
  adds no BOS of its own, and its BOS is ``<|im_start|>``.
- A non-empty context gets the BOS token in front only if the tokenizer itself adds one
  when asked for special tokens (Llama-2 style); the context is otherwise used as is.
- Trailing whitespace of a context moves to the continuation, and the continuation's tokens
  are read off the tokenisation of context+continuation, so a BPE merge across the join
  is tokenised as the model would see it.

Batches are formed from items sorted by length under a token budget, so almost no compute
goes to padding; padding is on the right, where a causal model's real tokens never see it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fairtune.engine.device import model_device
from fairtune.engine.progress import progress_bar
from fairtune.errors import FairtuneError

PrefixPolicy = Literal["auto", "bos", "eos"]
# Padded tokens per forward pass. Larger batches are slower on CPU: the float32 logits of
# 4096 tokens over a 49k vocabulary are 800 MB, and memory traffic then dominates
# (measured on SmolLM2-135M, 2 cores: 889 real tokens/s at 768, 627 at 4096).
DEFAULT_MAX_BATCH_TOKENS = 768


@dataclass
class ScoredText:
    """Scores of one continuation: one log-probability (nats) per continuation token."""

    context: str
    continuation: str
    token_ids: list[int]
    token_logprobs: list[float]

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def total_logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def mean_logprob(self) -> float:
        return self.total_logprob / self.n_tokens if self.token_ids else float("nan")


@dataclass
class TokenDivergence:
    """How far the audited model's next-token distributions are from a reference's, per
    continuation token: KL(reference || audited) in nats, and whether the two models' most
    likely tokens agree there."""

    context: str
    continuation: str
    token_ids: list[int]
    kl: list[float]
    same_argmax: list[bool]


@dataclass
class ScoringStats:
    """Work done by an engine so far: real tokens, tokens including padding, forward time."""

    sequences: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0

    def count(self, batch: list[Any], ids: Any, mask: Any) -> None:
        self.sequences += len(batch)
        self.batches += 1
        self.real_tokens += int(mask.sum())
        self.padded_tokens += ids.numel()

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequences": self.sequences, "batches": self.batches,
            "real_tokens": self.real_tokens, "padded_tokens": self.padded_tokens,
            "padding_share": round(1 - self.real_tokens / self.padded_tokens, 4) if self.padded_tokens else 0.0,
            "seconds": round(self.seconds, 3),
            "real_tokens_per_second": round(self.real_tokens / self.seconds, 1) if self.seconds else None,
        }


@dataclass
class _Item:
    index: int
    input_ids: list[int]   # prefix/context + continuation
    n_scored: int          # the last n_scored ids are the continuation


class ScoringEngine:
    """Scores texts with a causal LM. ``max_batch_tokens`` bounds (batch size x padded length)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 prefix: PrefixPolicy = "auto", progress: bool = False):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.progress = progress
        self.prefix_token_id = self._choose_prefix(prefix)
        self.bos_for_context = self._tokenizer_adds_bos()
        self.max_length = getattr(model.config, "max_position_embeddings", None)
        self.stats = ScoringStats()

    @classmethod
    def from_loaded(cls, loaded: Any, **kwargs: Any) -> ScoringEngine:
        return cls(loaded.model, loaded.tokenizer, **kwargs)

    def describe(self) -> dict[str, Any]:
        return {
            "prefix_token": self.tokenizer.convert_ids_to_tokens(self.prefix_token_id),
            "prefix_token_id": self.prefix_token_id,
            "bos_before_context": self.bos_for_context,
            "max_batch_tokens": self.max_batch_tokens,
            "dtype": str(self.model.dtype).removeprefix("torch."),
        }

    # -- public API ---------------------------------------------------------------------

    def score_texts(self, texts: Sequence[str]) -> list[ScoredText]:
        """Log-likelihood of each whole text, its first token conditioned on the prefix token."""
        return self.score_continuations([""] * len(texts), texts)

    def score_continuations(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[ScoredText]:
        """Log-likelihood of each continuation given its context (in input order)."""
        if len(contexts) != len(continuations):
            raise ValueError("contexts and continuations differ in length")
        items = [self._encode(i, c, x) for i, (c, x) in enumerate(zip(contexts, continuations))]
        logprobs: list[list[float]] = [[] for _ in items]
        batches = self._batches(items)
        with progress_bar(self.progress) as bar:
            task = bar.add_task("scoring", total=len(items))
            for batch in batches:
                for item, values in zip(batch, self._forward(batch)):
                    logprobs[item.index] = values
                bar.advance(task, len(batch))
        return [ScoredText(c, x, item.input_ids[len(item.input_ids) - item.n_scored:], logprobs[item.index])
                for c, x, item in zip(contexts, continuations, items)]

    def kl_from(self, reference: ScoringEngine, contexts: Sequence[str],
                continuations: Sequence[str]) -> list[TokenDivergence]:
        """KL(reference || self) = sum_v p_ref(v) * (log p_ref(v) - log p_self(v)) at every
        continuation token, both models conditioned on the same context + continuation prefix.

        Items are tokenised and batched exactly as :meth:`score_continuations` does (this
        engine's conventions and token budget), and both models read the same batches. Each
        batch's logits become float32 log-softmax rows for the scored positions only, and are
        freed before the next batch, so at most one batch of full distributions is in memory.
        The vocabularies are compared before any work, so a call with no items checks
        compatibility alone.
        """
        import torch

        if len(contexts) != len(continuations):
            raise ValueError("contexts and continuations differ in length")
        mine, theirs = self.model.config.vocab_size, reference.model.config.vocab_size
        if mine != theirs:
            raise FairtuneError(f"reference model has {theirs} output tokens, the audited model {mine}: "
                                "KL needs both models on one tokenizer")
        if (reference.tokenizer is not self.tokenizer
                and reference.tokenizer.get_vocab() != self.tokenizer.get_vocab()):
            raise FairtuneError("the reference model's tokenizer vocabulary differs from the audited model's: "
                                "KL needs both models on one tokenizer")
        items = [self._encode(i, c, x) for i, (c, x) in enumerate(zip(contexts, continuations))]
        kls: list[list[float]] = [[] for _ in items]
        same: list[list[bool]] = [[] for _ in items]
        with progress_bar(self.progress) as bar:
            task = bar.add_task("comparing", total=len(items))
            for batch in self._batches(items):
                ids, mask, rows, cols = self._pad(batch)
                logprobs = []
                with torch.inference_mode():
                    for engine in (reference, self):
                        started = time.perf_counter()
                        logits = engine.model(input_ids=ids, attention_mask=mask).logits
                        # Index before upcasting: only the scored rows ever exist in float32.
                        logprobs.append(torch.log_softmax(logits[rows, cols - 1].float(), dim=-1))
                        del logits
                        engine.stats.seconds += time.perf_counter() - started
                    ref, own = logprobs
                    # Rounding can leave a true zero a hair below it; KL is never negative.
                    kl = (ref.exp() * (ref - own)).sum(-1).clamp_min(0.0)
                    agree = ref.argmax(-1) == own.argmax(-1)
                for engine in (reference, self):
                    engine.stats.count(batch, ids, mask)
                for item, values, agreed in zip(batch, _split(kl.tolist(), batch), _split(agree.tolist(), batch)):
                    kls[item.index], same[item.index] = values, agreed
                bar.advance(task, len(batch))
        return [TokenDivergence(c, x, item.input_ids[len(item.input_ids) - item.n_scored:], kls[item.index],
                                same[item.index])
                for c, x, item in zip(contexts, continuations, items)]

    # -- tokenisation -------------------------------------------------------------------

    def _choose_prefix(self, policy: PrefixPolicy) -> int:
        tok = self.tokenizer
        order = {"auto": (tok.bos_token_id, tok.eos_token_id), "bos": (tok.bos_token_id,),
                 "eos": (tok.eos_token_id,)}[policy]
        for token_id in order:
            if token_id is not None:
                return int(token_id)
        raise FairtuneError(f"tokenizer has no {policy} token to condition the first word on")

    def _tokenizer_adds_bos(self) -> bool:
        bos = self.tokenizer.bos_token_id
        ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return bos is not None and bool(ids) and ids[0] == bos

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, index: int, context: str, continuation: str) -> _Item:
        if not continuation:
            raise FairtuneError(f"item {index}: empty text to score")
        if not context:
            continuation_ids = self._ids(continuation)
            if continuation_ids[0] == self.prefix_token_id:
                # The text already opens with the prefix token: it conditions, it is not scored
                # (lm-evaluation-harness does the same).
                context_ids, continuation_ids = continuation_ids[:1], continuation_ids[1:]
            else:
                context_ids = [self.prefix_token_id]
        else:
            stripped = context.rstrip()
            continuation = context[len(stripped):] + continuation
            context_ids = self._ids(stripped)
            whole = self._ids(stripped + continuation)
            continuation_ids = whole[len(context_ids):]
            if self.bos_for_context:
                context_ids = [self.tokenizer.bos_token_id, *context_ids]
        if not continuation_ids:
            raise FairtuneError(f"item {index}: nothing to score after the prefix token")
        ids = context_ids + continuation_ids
        if self.max_length and len(ids) > self.max_length:
            raise FairtuneError(f"item {index}: {len(ids)} tokens, more than the model's "
                                f"{self.max_length}-token window")
        return _Item(index, ids, len(continuation_ids))

    def _batches(self, items: list[_Item]) -> list[list[_Item]]:
        # Longest first: the first item of a batch fixes its padded length, and an
        # out-of-memory error would show up at once rather than at the end.
        ordered = sorted(items, key=lambda item: len(item.input_ids), reverse=True)
        batches: list[list[_Item]] = []
        for item in ordered:
            if batches and (len(batches[-1]) + 1) * len(batches[-1][0].input_ids) <= self.max_batch_tokens:
                batches[-1].append(item)
            else:
                batches.append([item])
        return batches

    # -- the forward pass ---------------------------------------------------------------

    def _pad(self, batch: list[_Item]):
        """Right-padded ids and mask, and the (row, position) of every scored token: its
        distribution is the one the model predicts at the position before."""
        import torch

        width = len(batch[0].input_ids)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids)
            mask[row, : len(item.input_ids)] = 1
        rows = torch.cat([torch.full((item.n_scored,), r) for r, item in enumerate(batch)])
        cols = torch.cat([torch.arange(len(item.input_ids) - item.n_scored, len(item.input_ids))
                          for item in batch])
        device = model_device(self.model)   # inputs go where the model is
        return ids.to(device), mask.to(device), rows.to(device), cols.to(device)

    def _forward(self, batch: list[_Item]) -> list[list[float]]:
        import torch

        ids, mask, rows, cols = self._pad(batch)
        started = time.perf_counter()
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            picked = logits[rows, cols - 1].float()
            targets = ids[rows, cols]
            values = picked.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(picked, dim=-1)
        self.stats.seconds += time.perf_counter() - started
        self.stats.count(batch, ids, mask)
        return _split(values.tolist(), batch)


def _split(flat: list[Any], batch: list[_Item]) -> list[list[Any]]:
    """Cut a flat list of per-scored-token values back into one list per item."""
    out, start = [], 0
    for item in batch:
        out.append(flat[start: start + item.n_scored])
        start += item.n_scored
    return out
