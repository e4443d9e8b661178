"""Token-wise constrained SFT (Qi et al. 2024, "Safety Alignment Should Be Made More Than Just a
Few Tokens Deep"): per token t of the response,

    loss_t = (2 / beta_t) * softplus(beta_t * (log p_base(y_t) - log p_tuned(y_t)))

whose gradient is SFT's scaled by 2 * sigmoid(-beta_t * log-ratio): a token stops pulling once
the tuned model prefers it over the base by a margin, and a large beta on the first tokens keeps
how responses *start* (where refusals live) close to the base. beta -> 0 recovers plain SFT.
"""

from __future__ import annotations

from typing import Any

from fairtune.training.regularisers.base import Regulariser, StepOutputs, token_mean


class Constrained(Regulariser):
    name = "constrained"
    needs_base_train = True
    replaces_sft = True

    def __init__(self, config: Any, context: Any):
        super().__init__(config, context)
        self.weight = 1.0   # it is the task loss, not an extra term

    def betas(self, positions: Any) -> Any:
        import torch

        c = self.config
        return torch.where(positions == 0, c.beta_first,
                           torch.where(positions < c.early_tokens, c.beta_early, c.beta_rest)).to(torch.float32)

    def penalty(self, model: Any, outputs: StepOutputs) -> Any:
        import torch.nn.functional as F

        beta = self.betas(outputs.train_positions)
        ratio = outputs.base_train_token_logprobs - outputs.train_token_logprobs
        return token_mean(2 / beta * F.softplus(beta * ratio))
