"""What a regulariser is: a named loss term with a weight, computed from the step's forward pass.

The trainer runs one forward pass per step over the training rows plus (when a regulariser asks
for them) a few anchor rows, and one gradient-free pass of the base model over the rows that need
it; each regulariser reads what it needs from the :class:`StepOutputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass
class Context:
    """What regularisers may use besides the model: the method (for the base model and weight
    displacements), the encoded anchor examples, and settings."""

    method: Any
    anchors: list            # list[Example]
    pad_id: int
    seed: int
    cache_key: str           # identifies model + method + anchors, for cached statistics (EWC)


@dataclass
class StepOutputs:
    """One step's tensors. ``train_logprobs``/``anchor_*`` are log-softmax rows at labelled
    positions, already shifted so position i scores token i."""

    train_token_logprobs: Any            # (n_train_tokens,) log p_tuned(y_t), with grad
    train_positions: Any                 # (n_train_tokens,) 0-based index of each token in its response
    base_train_token_logprobs: Any       # same tokens under the base model, or None
    anchor_logprobs: Any                 # (n_anchor_tokens, vocab) tuned log-softmax, or None
    base_anchor_logprobs: Any            # (n_anchor_tokens, vocab) base log-softmax, or None
    unlikely_token_logprobs: Any = None  # (n,) log p_tuned(y_t) of tokens of ``loss: unlikelihood`` rows
    unlikely_positions: Any = None       # (n,) their 0-based index in their response
    # The training rows' own forward pass, for objectives that compare rows of one batch
    # (counterfactual pairs): full logits, token ids, attention mask, the rows' example indices.
    train_logits: Any = None             # (rows, width, vocab), with grad
    train_input_ids: Any = None
    train_mask: Any = None
    train_indices: Any = None            # list[int]: each row's index in the training examples
    position: int = 0                    # micro-batches done before this one (picks objectives' rows)


def token_mean(values: Any) -> Any:
    """The mean over tokens, zero (still in the graph) when a batch has none of them: a batch
    may hold only unlikelihood rows, or none."""
    return values.sum() / max(values.numel(), 1)


class Regulariser:
    name: ClassVar[str]
    needs_anchor_rows: ClassVar[bool] = False   # anchor rows in the forward pass
    needs_base_train: ClassVar[bool] = False    # base log-probs of the training tokens
    replaces_sft: ClassVar[bool] = False        # its term is the task loss itself

    def __init__(self, config: Any, context: Context):
        self.config, self.context = config, context
        self.weight = float(getattr(config, "weight", 1.0))

    def setup(self, model: Any) -> None:
        """One-off work before training (e.g. the Fisher information)."""

    def penalty(self, model: Any, outputs: StepOutputs) -> Any:
        raise NotImplementedError
