"""Counterfactual pairing: a text and its counterfactual (the same text with the attribute words
swapped, "the nurse said she" / "the nurse said he") should lead the model to the same next
words, and should be about equally likely.

For each pair of training rows that share ``meta.group`` and differ in ``meta.attributes[axis]``
(what CDA and the balanced templates write), the two token sequences are aligned
(:func:`aligned_positions`, longest common blocks): every position after the first difference
whose next token is the same in both sequences is compared. The term is the mean, over pairs, of
the mean divergence of the two next-token distributions at those positions (Jensen-Shannon by
default, or symmetric KL), plus ``loglik_gap`` times the squared difference of the two
sequences' total log-likelihoods, or of that difference and a reference that keeps a word's
frequency offset: the batch's mean difference in the same direction (``loglik_gap_target:
batch_mean``) or the running mean of the differences with the same swapped words
(``swap_offset``). Positions before the first difference see the same prefix and
cannot differ, so a pair of identical texts costs exactly 0.

This is the counterfactual logit pairing of Garg et al. (2019, "Counterfactual Fairness in Text
Classification through Robustness") carried over to a language model's next-token distributions,
and the sequence term is the quantity CrowS-Pairs compares. Partners are planned into the same
training batch, so the term reads the logits of the batch's own forward pass: no extra pass.
"""

from __future__ import annotations

import difflib
import random
from collections import defaultdict
from typing import Any

from fairtune.training.objectives.base import Objective, fail, forward_rows


def aligned_positions(a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
    """Positions ``(pa, pb)`` whose logits predict the same next token in ``a`` and ``b`` after
    the sequences first differ: for every matching block that does not start both sequences, the
    block's tokens are predicted from the position before each of them."""
    blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    pa, pb = [], []
    for i, j, n in blocks:
        if n == 0 or (i == 0 and j == 0):
            continue                      # the shared prefix: identical distributions
        pa += range(i - 1, i - 1 + n)
        pb += range(j - 1, j - 1 + n)
    return pa, pb


def divergence(logp_a: Any, logp_b: Any, kind: str) -> Any:
    """Per-row divergence of two sets of log-probability rows: Jensen-Shannon (nats, at most
    log 2) or symmetric KL, 1/2 (KL(a||b) + KL(b||a))."""
    import math

    import torch

    if kind == "jsd":
        mixture = torch.logsumexp(torch.stack([logp_a, logp_b]), dim=0) - math.log(2.0)
        kl_a = (logp_a.exp() * (logp_a - mixture)).sum(-1)
        kl_b = (logp_b.exp() * (logp_b - mixture)).sum(-1)
        return 0.5 * (kl_a + kl_b)
    return 0.5 * ((logp_a.exp() - logp_b.exp()) * (logp_a - logp_b)).sum(-1)


def sequence_logliks(logits: Any, input_ids: Any, mask: Any) -> Any:
    """Total log-likelihood of each row's tokens after its first (the prefix token)."""
    import torch.nn.functional as F

    rows, width, vocab = logits.shape
    # rows of the vocabulary kept contiguous: cross-entropy over a transposed (N, V, L) view strides
    # through memory and was an order of magnitude slower on long rows
    token = -F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), input_ids[:, 1:].reshape(-1),
                             reduction="none").view(rows, width - 1)
    return (token * mask[:, 1:]).sum(-1)


class CounterfactualPairing(Objective):
    name = "counterfactual_pairing"
    pairs_in_batches = True

    @classmethod
    def check_records(cls, config: Any, records: list[dict], field: str) -> None:
        from fairtune.curation.records import is_context, meta

        values: dict[str, set[str]] = defaultdict(set)
        for record in records:
            info = meta(record)
            value = (info.get("attributes") or {}).get(config.axis)
            if info.get("group") is not None and value is not None and not is_context(record):
                if config.values is None or value in config.values:
                    values[str(info["group"])].add(str(value))
        if not any(len(v) > 1 for v in values.values()):
            raise fail(f"no counterfactual pairs on axis '{config.axis}' in the training data (records "
                       f"sharing meta.group whose meta.attributes.{config.axis} differ; `fairtune data pairs` "
                       "writes them)", field)

    def _pairs(self, examples: list) -> list[tuple[int, int]]:
        axis, allowed = self.config.axis, self.config.values
        by_group: dict[str, list[int]] = defaultdict(list)
        for index, example in enumerate(examples):
            value = example.attributes.get(axis)
            if example.group is not None and value is not None and (allowed is None or value in allowed):
                by_group[example.group].append(index)
        pairs = []
        for members in by_group.values():
            for x, i in enumerate(members):
                for j in members[x + 1:]:
                    if examples[i].attributes[axis] != examples[j].attributes[axis]:
                        pairs.append((i, j))
        return pairs

    def hold_back(self, examples: list, contexts: list) -> tuple[set[int], set[int]]:
        pairs = self._pairs(examples)
        groups = sorted({examples[i].group for i, _ in pairs})
        random.Random(self.context.seed).shuffle(groups)
        kept = set(groups[:self.config.held_out]) if len(groups) > 2 * self.config.held_out else set()
        return {i for i, e in enumerate(examples) if e.group in kept}, set()

    def _direction(self, examples: list, i: int, j: int) -> tuple[float, tuple]:
        """+1 when ``i`` holds the first of the pair's two values in a fixed order, so a gap read as
        ``sign * (loglik_i - loglik_j)`` always means the same thing (female - male), and the key
        of the gaps it is compared with: the two values, and with ``swap_offset`` also the swapped
        tokens themselves ("woman"/"man" and "Ms."/"Mr." have offsets of their own)."""
        a, b = str(examples[i].attributes[self.config.axis]), str(examples[j].attributes[self.config.axis])
        sign, values = (1.0, (a, b)) if a < b else (-1.0, (b, a))
        if self.config.loglik_gap_target != "swap_offset":
            return sign, values
        ids_a, ids_b = examples[i].input_ids, examples[j].input_ids
        opcodes = difflib.SequenceMatcher(None, ids_a, ids_b, autojunk=False).get_opcodes()
        swapped = [(tuple(ids_a[i1:i2]), tuple(ids_b[j1:j2])) for tag, i1, i2, j1, j2 in opcodes if tag != "equal"]
        return sign, (values, tuple(swapped if sign > 0 else [(y, x) for x, y in swapped]))

    def setup(self, model: Any, examples: list, contexts: list, held_examples: list, held_contexts: list) -> None:
        self.pairs = {(i, j): aligned_positions(examples[i].input_ids, examples[j].input_ids)
                      for i, j in self._pairs(examples)}
        self.directions = {(i, j): self._direction(examples, i, j) for i, j in self.pairs}
        self.offsets: dict[tuple, tuple[float, int]] = {}     # swap_offset: key -> (running mean, count)
        self.held_back = held_examples

    def units(self, examples: list) -> list[list[int]]:
        members: dict[int, set[int]] = defaultdict(set)
        for i, j in self.pairs:
            members[i].add(j)
            members[j].add(i)
        seen, units = set(), []
        for index in range(len(examples)):
            if index in seen:
                continue
            unit, stack = [], [index]          # everything reachable through pairs: one unit
            while stack:
                k = stack.pop()
                if k in seen:
                    continue
                seen.add(k)
                unit.append(k)
                stack.extend(members[k])
            units.append(sorted(unit))
        return units

    def penalty(self, model: Any, outputs: Any) -> Any:
        row_of = {index: row for row, index in enumerate(outputs.train_indices)}
        kept = [(i, j) for i, j in self.pairs if i in row_of and j in row_of]
        chosen = [(row_of[i], row_of[j], self.pairs[i, j]) for i, j in kept]
        return self._term(outputs.train_logits, outputs.train_input_ids, outputs.train_mask, chosen,
                          [self.directions[pair] for pair in kept], learn_offsets=True)

    def _term(self, logits: Any, input_ids: Any, mask: Any, chosen: list, directions: list,
              learn_offsets: bool = False) -> Any:
        import torch

        need_gap = self.config.loglik_gap > 0
        if not chosen:   # the same log keys on every batch (processes reduce them together)
            self.last = {"divergence": 0.0, **({"loglik_gap_abs": 0.0} if need_gap else {})}
            return logits.sum() * 0.0
        # every aligned position of every pair gathered in one indexing op: indexing the logits once
        # per pair made autograd scatter a batch-sized zero tensor per pair on the way back, which
        # was a fifth of the step
        with_positions = [(a, b, pa, pb) for a, b, (pa, pb) in chosen if pa]
        term = logits.sum() * 0.0
        if with_positions:
            device = logits.device
            slot = torch.tensor([k for k, (_, _, pa, _) in enumerate(with_positions) for _ in pa], device=device)
            rows_a = torch.tensor([a for a, _, pa, _ in with_positions for _ in pa], device=device)
            rows_b = torch.tensor([b for _, b, _, pb in with_positions for _ in pb], device=device)
            cols_a = torch.tensor([p for _, _, pa, _ in with_positions for p in pa], device=device)
            cols_b = torch.tensor([p for _, _, _, pb in with_positions for p in pb], device=device)
            logp_a = torch.log_softmax(logits[rows_a, cols_a].float(), -1)
            logp_b = torch.log_softmax(logits[rows_b, cols_b].float(), -1)
            per_position = divergence(logp_a, logp_b, self.config.divergence)
            n_pairs = len(with_positions)
            sums = torch.zeros(n_pairs, device=device).index_add(0, slot, per_position)
            term = (sums / torch.bincount(slot, minlength=n_pairs)).mean()   # each pair weighs the same
        self.last = {"divergence": float(term.detach())}
        if need_gap:
            logliks = sequence_logliks(logits, input_ids, mask)
            index_a = torch.tensor([a for a, _, _ in chosen], device=logits.device)
            index_b = torch.tensor([b for _, b, _ in chosen], device=logits.device)
            gaps = logliks[index_a] - logliks[index_b]
            self.last["loglik_gap_abs"] = float(gaps.detach().abs().mean())
            if self.config.loglik_gap_target == "batch_mean":
                gaps = self._centred(gaps, directions)
            elif self.config.loglik_gap_target == "swap_offset":
                gaps = self._from_offsets(gaps, directions, learn_offsets)
            term = term + self.config.loglik_gap * gaps.pow(2).mean()
        return term

    @staticmethod
    def _centred(gaps: Any, directions: list) -> Any:
        """Each gap, read in its pair's fixed direction, minus the mean of the batch's gaps between
        the same two values. A squared gap pulled to zero shrinks the context's share of every gap
        and a global offset (one word likelier than the other everywhere) alike, so each pair keeps
        its sign; pulled to the shared offset, only the context's share goes. A pair alone with its
        two values in the batch has nothing to be compared with and counts 0."""
        import torch

        signs = torch.tensor([sign for sign, _ in directions], device=gaps.device, dtype=gaps.dtype)
        oriented = gaps * signs
        keys = sorted({key for _, key in directions})
        slot = torch.tensor([keys.index(key) for _, key in directions], device=gaps.device)
        sums = torch.zeros(len(keys), device=gaps.device, dtype=gaps.dtype).index_add(0, slot, oriented)
        return oriented - (sums / torch.bincount(slot, minlength=len(keys)))[slot]

    def _from_offsets(self, gaps: Any, directions: list, learn: bool) -> Any:
        """Each gap, read in its pair's fixed direction, minus the running mean of the gaps seen
        with the same swapped tokens (a constant: the model is not pulled toward it). A batch mean
        would mix the offsets of different words, and most swaps occur once or twice a batch;
        over steps each swap's offset is estimated from many contexts, so what is penalised is
        how much the context moves the gap. A swap not seen before is compared with this batch's
        mean for it. Training batches update the means (the first ten observations averaged, then
        an exponential average with weight 0.1, as the model changes)."""
        import torch

        signs = torch.tensor([sign for sign, _ in directions], device=gaps.device, dtype=gaps.dtype)
        oriented = gaps * signs
        batch: dict[tuple, list[float]] = defaultdict(list)
        for value, (_, key) in zip(oriented.detach().tolist(), directions):
            batch[key].append(value)
        means = {key: sum(values) / len(values) for key, values in batch.items()}
        targets = torch.tensor([self.offsets[key][0] if key in self.offsets else means[key] for _, key in directions],
                               device=gaps.device, dtype=gaps.dtype)
        if learn:
            for key, mean in means.items():
                old, count = self.offsets.get(key, (mean, 0))
                rate = max(1.0 / (count + 1), 0.1)
                self.offsets[key] = (old + rate * (mean - old), count + 1)
        return oriented - targets

    def measure(self, model: Any) -> float:
        import torch

        examples = self.held_back
        if not examples:
            return 0.0
        kept = self._pairs(examples)
        pairs = [(i, j, aligned_positions(examples[i].input_ids, examples[j].input_ids)) for i, j in kept]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                output, ids, mask = forward_rows(model, [e.input_ids for e in examples], self.context.pad_id)
                return float(self._term(output.logits, ids, mask, pairs,
                                        [self._direction(examples, i, j) for i, j in kept]))
        finally:
            model.train(was_training)

