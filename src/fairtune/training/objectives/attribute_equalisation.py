"""Attribute equalisation: after a neutral context ("When the surveyor got back to the office,"),
the model should find "she" and "he", "her" and "his", "woman" and "man" equally likely as the
next word.

The term is, averaged over a batch of neutral contexts (``loss: none`` context records of the
axis), the sum over the axis's word lines of the squared log-ratio of every two words of a line:
``sum_lines sum_{a<b} (log p(w_a | c) - log p(w_b | c))^2``. A word's log-probability is the sum
over its tokens (scored after a leading space). This is the equalisation loss of Qian et al.
(2019, "Reducing Gender Bias in Word-Level Language Models with a Gender-Equalizing Loss
Function") on the model's own next-word distribution, restricted to contexts where the gender is
not given, so it never asks the model to confuse "the mother said" with "the father said".

Word lists ship per axis (``objectives/data/<axis>.tsv``: a header of values, then one word per
value on each line); ``words`` replaces the list with a file of the same layout and ``pairs``
adds lines inline.
"""

from __future__ import annotations

from importlib import resources
from itertools import combinations
from pathlib import Path
from typing import Any

from fairtune.errors import InputError
from fairtune.training.objectives.base import (Objective, context_examples, cyclic_batch, fail, forward_rows,
                                               record_axis_contexts, seeded_order)


def builtin_words_path(axis: str) -> Path:
    return Path(str(resources.files("fairtune.training.objectives") / "data" / f"{axis}.tsv"))


def read_word_lines(path: Path) -> list[list[str]]:
    """The word lines of a word-list file (header of values first, then one word per value)."""
    from fairtune.readers import read_text

    lines = [(n, line) for n, line in enumerate(read_text(path).splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError("empty word list: expected a header of values and at least one line of words", file=path)
    header = lines[0][1].split("\t")
    rows = []
    for number, line in lines[1:]:
        words = [w.strip() for w in line.split("\t")]
        if len(words) != len(header) or not all(words):
            raise InputError(f"expected {len(header)} tab-separated words (one per value: {', '.join(header)})",
                             file=path, row=number)
        rows.append(words)
    if not rows:
        raise InputError("empty word list: the header has no lines of words under it", file=path)
    return rows


def word_lines(config: Any) -> list[list[str]]:
    base = read_word_lines(config.words or builtin_words_path(config.axis))
    return base + [list(p) for p in (config.pairs or [])]


class AttributeEqualisation(Objective):
    name = "attribute_equalisation"

    @classmethod
    def check_records(cls, config: Any, records: list[dict], field: str) -> None:
        if not record_axis_contexts(records, config.axis):
            raise fail(f"no neutral contexts for axis '{config.axis}' in the training data (records with "
                       "\"loss\": \"none\"; `fairtune data pairs` writes them)", field)
        word_lines(config)   # an empty or malformed word file fails here, before the model loads

    def hold_back(self, examples: list, contexts: list) -> tuple[set[int], set[int]]:
        mine = context_examples(contexts, self.config.axis)
        held = self.config.held_out if len(mine) > 2 * self.config.held_out else 0
        return set(), {mine[i] for i in seeded_order(len(mine), self.context.seed)[:held]}

    def setup(self, model: Any, examples: list, contexts: list, held_examples: list, held_contexts: list) -> None:
        tokenizer = self.context.tokenizer
        self.lines = [[tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in line]
                      for line in word_lines(self.config)]
        self.contexts = [contexts[i] for i in context_examples(contexts, self.config.axis)]
        self.held = [c for c in held_contexts if c.axis in (None, self.config.axis)]
        self.order = seeded_order(len(self.contexts), self.context.seed + 7)

    def penalty(self, model: Any, outputs: Any) -> Any:
        chosen = cyclic_batch(self.order, outputs.position, self.config.contexts_per_step)
        return self._term(model, [self.contexts[i].input_ids for i in chosen])

    def word_logprobs(self, model: Any, contexts: list[list[int]]) -> Any:
        """``(contexts, lines, words per line)`` log-probabilities of each word after each context.
        One row per context serves every one-token word; each longer word gets a row of its own."""
        import torch

        rows, reads = [], []        # reads: (context, line, word) -> [(row, position, token)]
        for c, context in enumerate(contexts):
            rows.append(context)
            base_row = len(rows) - 1
            for l, line in enumerate(self.lines):
                for w, tokens in enumerate(line):
                    if len(tokens) == 1:
                        reads.append(((c, l, w), [(base_row, len(context) - 1, tokens[0])]))
                    else:
                        rows.append(context + tokens[:-1])
                        reads.append(((c, l, w), [(len(rows) - 1, len(context) - 1 + k, t)
                                                  for k, t in enumerate(tokens)]))
        output, _, _ = forward_rows(model, rows, self.context.pad_id)
        flat = [(row, pos, tok) for _, parts in reads for row, pos, tok in parts]
        index = torch.tensor([[r, p] for r, p, _ in flat], device=output.logits.device)
        logp = torch.log_softmax(output.logits[index[:, 0], index[:, 1]].float(), -1)
        token_lp = logp[torch.arange(len(flat)), torch.tensor([t for _, _, t in flat], device=logp.device)]
        sizes = [len(parts) for _, parts in reads]
        per_word = torch.stack([chunk.sum() for chunk in torch.split(token_lp, sizes)])
        width = max(len(line) for line in self.lines)
        table = per_word.new_zeros((len(contexts), len(self.lines), width))
        keys = torch.tensor([key for key, _ in reads], device=logp.device)
        table = table.index_put((keys[:, 0], keys[:, 1], keys[:, 2]), per_word)
        return table

    def _term(self, model: Any, contexts: list[list[int]]) -> Any:
        table = self.word_logprobs(model, contexts)
        total = table.new_zeros(())
        for l, line in enumerate(self.lines):
            for a, b in combinations(range(len(line)), 2):
                total = total + (table[:, l, a] - table[:, l, b]).pow(2).mean()
        # The first line's |log-ratio| (she/he for gender) reads more easily in a log than the sum.
        self.last = {"first_line_abs_log_ratio": float((table[:, 0, 0] - table[:, 0, 1]).detach().abs().mean())}
        return total

    def measure(self, model: Any) -> float:
        import torch

        if not self.held:
            return 0.0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return float(self._term(model, [c.input_ids for c in self.held]))
        finally:
            model.train(was_training)
