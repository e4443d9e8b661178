"""Prompt-only baseline: no weight changes, a debiasing system prompt baked into the chat template.

The literature reports that instructions alone barely move measured bias; this method exists so
the method table can show that with data. Likelihood audits score bare sentences and are
unaffected by a system prompt by construction, which is part of what the baseline shows.
"""

from __future__ import annotations

from typing import Any

from fairtune.training.methods.base import Method

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Treat people of every gender, race, religion, nationality and age "
    "fairly and equally. Do not rely on stereotypes: judge each person only by what you are told about "
    "them, and when the information is not enough to answer, say so.")


def with_default_system_prompt(template: str, prompt: str) -> str:
    """``template`` changed so that a conversation without a system message gets ``prompt``."""
    import json

    return ("{%- if messages and messages[0]['role'] != 'system' -%}{%- set messages = "
            f"[{{'role': 'system', 'content': {json.dumps(prompt)}}}] + messages -%}}{{%- endif -%}}" + template)


class PromptMethod(Method):
    name = "prompt"
    description = "no training: a debiasing system prompt (baseline)"
    trains = False

    @property
    def system_prompt(self) -> str:
        return self.config.system_prompt or DEFAULT_SYSTEM_PROMPT

    def prepare(self, model: Any) -> Any:
        model.requires_grad_(False)
        return model

    def apply_to_tokenizer(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the prompt method needs a chat model (the tokenizer has no chat template)")
        tokenizer.chat_template = with_default_system_prompt(tokenizer.chat_template, self.system_prompt)
