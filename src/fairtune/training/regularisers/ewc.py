"""Elastic weight consolidation: the squared change of each weight, weighted by its diagonal Fisher
information on the anchor set, so weights that matter for safety refusals and general text move
least. The Fisher is computed once per (model, method, anchors) and cached as safetensors."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from fairtune.engine.device import model_device
from fairtune.training.regularisers.base import Regulariser, StepOutputs


class EWC(Regulariser):
    name = "ewc"

    def setup(self, model: Any) -> None:
        from safetensors.torch import load_file, save_file

        from fairtune.io import atomic_dir
        from fairtune.models.cache import cache_root

        key = hashlib.sha256(f"{self.context.cache_key}|{self.config.fisher_examples}|{self.context.seed}"
                             .encode()).hexdigest()[:24]
        path = cache_root() / "fisher" / key / "fisher.safetensors"
        self.cached = path.exists()
        if self.cached:
            self.fisher = load_file(str(path))
        else:
            self.fisher = self.compute_fisher(model)
            with atomic_dir(path.parent) as tmp:
                save_file(self.fisher, str(tmp / path.name))

    def compute_fisher(self, model: Any) -> dict[str, Any]:
        """Empirical diagonal Fisher: mean over anchor examples of the squared gradient of the
        example's mean token log-likelihood, normalised to mean 1 so the weight reads like L2-SP's."""
        import torch

        from fairtune.training.data import collate

        params = self.context.method.fisher_parameters(model)
        flags = {n: p.requires_grad for n, p in params.items()}
        for p in params.values():
            p.requires_grad_(True)
        sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        anchors = list(self.context.anchors)
        random.Random(self.context.seed).shuffle(anchors)
        chosen = anchors[:self.config.fisher_examples]
        was_training = model.training
        model.eval()
        try:
            for example in chosen:
                batch = collate([example], self.context.pad_id, model_device(model))
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                labels = batch["labels"][:, 1:]
                mask = labels != -100
                logprobs = torch.log_softmax(logits[:, :-1].float(), -1)
                token = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                loglik = token[mask].mean()
                grads = torch.autograd.grad(loglik, list(params.values()), allow_unused=True)
                for (name, _), grad in zip(params.items(), grads):
                    if grad is not None:
                        sums[name] += grad.float().pow(2)
        finally:
            for name, p in params.items():
                p.requires_grad_(flags[name])
            model.train(was_training)
        total = sum(s.sum() for s in sums.values())
        count = sum(s.numel() for s in sums.values())
        scale = (count / total).item() if total > 0 else 1.0
        return {n: (s * scale / len(chosen)).contiguous() for n, s in sums.items()}

    def penalty(self, model: Any, outputs: StepOutputs) -> Any:
        return sum((self.fisher[name].to(delta.device) * delta.float().pow(2)).sum()
                   for name, delta in self.context.method.displacements(model))
