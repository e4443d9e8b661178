"""Token-level unlikelihood (Welleck et al. 2019, "Neural Text Generation with Unlikelihood
Training"): for each labelled token of a ``loss: unlikelihood`` record, -log(1 - p_tuned(y_t)).

SFT only says what to write; this says what not to. The alignment stage pairs the helpful
anchors with refusal openers ("I can't help with that.") as unlikely text, so the model learns
where refusing is wrong, not only where it is right. The gradient fades as p -> 0: a token
stops being pushed once the model no longer writes it.

``first_tokens`` limits the term to the first tokens of each unlikely reply, where a reply's
course is decided. On the whole refusal opener it also taught the embedded model "I can help"
after harmful requests; on the first token alone it does not, but the weight still trades
refusal for over-refusal (README).
"""

from __future__ import annotations

from typing import Any

from fairtune.training.regularisers.base import Regulariser, StepOutputs, token_mean


class Unlikelihood(Regulariser):
    name = "unlikelihood"

    def penalty(self, model: Any, outputs: StepOutputs) -> Any:
        import torch

        # log(1 - p) = log(-expm1(log p)); the clamp keeps p = 1 finite
        logprobs = outputs.unlikely_token_logprobs
        if self.config.first_tokens is not None:
            logprobs = logprobs[outputs.unlikely_positions < self.config.first_tokens]
        logprobs = logprobs.clamp(max=-1e-6)
        return token_mean(-torch.log(-torch.expm1(logprobs)))
