"""Adversarial debiasing: a small probe reads the mean-pooled hidden state of one layer over a
neutral context ("After the long shift at the foundry, the welder mentioned that") and learns to
predict the context's stereotyped association on the axis (``meta.association``, male here); a
gradient-reversal layer (Ganin & Lempitsky 2015) between the model and the probe hands the model
the probe's gradient negated, so the model learns to make the association unreadable (the
adversarial debiasing of Zhang, Lemoine & Mitchell 2018, on a language model's representations).

The term is the probe's cross-entropy: the probe descends it, the model ascends it, but only while
the probe does better than chance on the batch (cross-entropy below log of the number of classes).
Past chance the cross-entropy has no ceiling, and a model that keeps ascending it only learns to
write the association with the opposite sign, which the probe reads again a few steps later: on a
toy task the unbounded reversal swung the probe between 19% and 94% and left the representations
further apart than they began. The probe is
a linear layer (or a one-hidden-layer MLP) trained by its own parameter group of the optimizer,
and its weights are kept in checkpoints. Its accuracy on each batch is logged every step; on
held-back contexts it is the constraint an ``adaptive`` weight drives towards a budget.
"""

from __future__ import annotations

from typing import Any

from fairtune.training.objectives.base import (Objective, context_examples, cyclic_batch, fail, forward_rows,
                                               record_axis_contexts, seeded_order)


def _grad_reverse() -> Any:
    import torch

    class GradReverse(torch.autograd.Function):
        """Identity forward; backward, the gradient negated and scaled by ``scale``."""

        @staticmethod
        def forward(ctx, x, scale):
            ctx.scale = scale
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return -ctx.scale * grad, None

    return GradReverse.apply


def labelled_contexts(contexts: list, axis: str) -> list[int]:
    return [i for i in context_examples(contexts, axis) if axis in contexts[i].association]


def pooled(hidden: Any, mask: Any) -> Any:
    """Mean over each row's real positions after the prefix token."""
    weights = mask.clone()
    weights[:, 0] = 0
    weights = weights.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class Adversarial(Objective):
    name = "adversarial"

    @classmethod
    def check_records(cls, config: Any, records: list[dict], field: str) -> None:
        from fairtune.curation.records import meta

        values = {str((meta(r).get("association") or {}).get(config.axis))
                  for r in record_axis_contexts(records, config.axis)
                  if (meta(r).get("association") or {}).get(config.axis) is not None}
        if len(values) < 2:
            raise fail(f"no neutral contexts labelled with at least two values of meta.association.{config.axis} "
                       "in the training data (`fairtune data pairs` writes them)", field)

    @classmethod
    def check_model(cls, config: Any, layers: int, field: str) -> None:
        # hidden_states holds the embeddings and each layer's output: layers + 1 entries
        if not -(layers + 1) <= config.layer <= layers:
            raise fail(f"layer {config.layer} is out of range: the model has {layers} layers (hidden states "
                       f"0..{layers}, or -1..-{layers + 1} from the last)", f"{field}.layer")

    def hold_back(self, examples: list, contexts: list) -> tuple[set[int], set[int]]:
        mine = labelled_contexts(contexts, self.config.axis)
        held = self.config.held_out if len(mine) > 2 * self.config.held_out else 0
        return set(), {mine[i] for i in seeded_order(len(mine), self.context.seed + 11)[:held]}

    def setup(self, model: Any, examples: list, contexts: list, held_examples: list, held_contexts: list) -> None:
        import torch

        from fairtune.engine.device import model_device

        axis = self.config.axis
        self.contexts = [contexts[i] for i in labelled_contexts(contexts, axis)]
        self.held = [c for c in held_contexts if axis in c.association]
        self.classes = sorted({c.association[axis] for c in self.contexts + self.held})
        self.order = seeded_order(len(self.contexts), self.context.seed + 13)
        size = model.config.hidden_size
        generator = torch.Generator().manual_seed(self.context.seed)   # the probe's start, from the seed
        if self.config.probe == "linear":
            probe = torch.nn.Linear(size, len(self.classes))
        else:
            probe = torch.nn.Sequential(torch.nn.Linear(size, self.config.probe_hidden), torch.nn.ReLU(),
                                        torch.nn.Linear(self.config.probe_hidden, len(self.classes)))
        with torch.no_grad():
            for param in probe.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        self.probe = probe.to(model_device(model))
        self.reverse = _grad_reverse()

    def parameters(self) -> list:
        return list(self.probe.parameters())

    def param_group(self) -> dict[str, Any]:
        return {"params": self.parameters(), "lr": self.config.probe_lr, "weight_decay": 0.0}

    def _forward(self, model: Any, contexts: list) -> tuple[Any, Any]:
        import torch

        output, _, mask = forward_rows(model, [c.input_ids for c in contexts], self.context.pad_id,
                                       hidden_states=True)
        hidden = pooled(output.hidden_states[self.config.layer].float(), mask)
        labels = torch.tensor([self.classes.index(c.association[self.config.axis]) for c in contexts],
                              device=hidden.device)
        return hidden, labels

    def penalty(self, model: Any, outputs: Any) -> Any:
        import torch.nn.functional as F

        contexts = [self.contexts[i] for i in cyclic_batch(self.order, outputs.position, self.config.contexts_per_step)]
        import math

        import torch

        hidden, labels = self._forward(model, contexts)
        with torch.no_grad():
            above_chance = float(F.cross_entropy(self.probe(hidden), labels)) < math.log(len(self.classes))
        logits = self.probe(self.reverse(hidden, 1.0 if above_chance else 0.0))
        self.last = {"probe_accuracy": float((logits.argmax(-1) == labels).float().mean()),
                     "reversed": float(above_chance)}
        return F.cross_entropy(logits, labels)

    def measure(self, model: Any) -> float:
        """The probe's accuracy on the held-back contexts."""
        import torch

        if not self.held:
            return 0.0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                hidden, labels = self._forward(model, self.held)
                return float((self.probe(hidden).argmax(-1) == labels).float().mean())
        finally:
            model.train(was_training)

    def state_tensors(self) -> dict[str, Any]:
        return {k: v.detach().contiguous() for k, v in self.probe.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Any]) -> None:
        self.probe.load_state_dict({k: v.to(next(self.probe.parameters()).device) for k, v in tensors.items()})
