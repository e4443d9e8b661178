"""KL(base || tuned) per anchor token: keeps the tuned model's next-token distributions on safety
refusals and general text where the base model had them."""

from __future__ import annotations

from typing import Any

from fairtune.training.regularisers.base import Regulariser, StepOutputs


def token_kl(base_logprobs: Any, tuned_logprobs: Any) -> Any:
    """Mean over rows of sum_v p_base(v) (log p_base(v) - log p_tuned(v))."""
    return (base_logprobs.exp() * (base_logprobs - tuned_logprobs)).sum(-1).mean()


class KlToBase(Regulariser):
    name = "kl_to_base"
    needs_anchor_rows = True

    def penalty(self, model: Any, outputs: StepOutputs) -> Any:
        return token_kl(outputs.base_anchor_logprobs, outputs.anchor_logprobs)
