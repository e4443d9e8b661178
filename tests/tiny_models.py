"""Tiny random causal LMs built in code, so unit tests run in seconds with no download."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_gguf import BOS_ID, CHAT_TEMPLATE, EOS_ID, PAD_ID, _train_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


def tiny_tokenizer(*, with_bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE of ~380 tokens with ChatML special tokens (bos <|im_start|>, eos <|im_end|>)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(), bos_token="<|im_start|>" if with_bos else None,
        eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                         pad_token_id=PAD_ID)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def save_tiny_model_dir(path: Path, seed: int = 0) -> Path:
    """A Hugging Face model directory (config, safetensors, tokenizer) like a user's local copy."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer), seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
