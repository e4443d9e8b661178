"""Write a tiny random Llama as a GGUF file, for tests of the GGUF loading path.

Real GGUF checkpoints are hundreds of megabytes and need a download. This builds one of about
400 KB in well under a second, entirely in code: a byte-level BPE tokenizer trained on a
few built-in lines, a random 2-layer ``LlamaForCausalLM``, and a GGUF file laid out the way
llama.cpp's ``convert_hf_to_gguf.py`` writes Llama models (F32 tensors, llama.cpp tensor names, q/k
rows permuted). Transformers loads it with
``from_pretrained(str(path.parent), gguf_file=path.name)`` for both the model and the tokenizer.
"""

from __future__ import annotations

import json
import pathlib

import gguf
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1 (bos), 2 (eos)
BOS_ID, EOS_ID, PAD_ID = 1, 2, 0
VOCAB_SIZE = 384
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog.
A language model predicts the next token from the tokens before it.
Auditing a model means asking it many questions and checking the answers.
Fairness tests compare how a model treats similar prompts about different groups.
The doctor said she would call back tomorrow morning.
The engineer said he would fix the bridge before winter.
The nurse and the teacher walked to the station together.
Numbers like 0, 1, 2, 3, 42, 100 and 2024 appear in text too.
Questions end with a question mark? Exclamations end with a bang!
You are a helpful assistant. Answer briefly and honestly.
user: What is the capital of France?
assistant: The capital of France is Paris.
user: Is this sentence toxic or harmless?
assistant: It is harmless.
Small models are fast to build, quick to load and easy to test.
Every test should run in seconds, without a network connection.
She sells sea shells by the sea shore, and he buys them all.
It was the best of times, it was the worst of times.
Tokenizers split text into pieces; models map pieces to vectors.
Weights, biases, logits and probabilities are all just numbers.
"""


def _train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    # The same pre-tokenizer transformers' GPT2Tokenizer uses, which is what a "gpt2" GGUF loads as.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    return tok


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: reorder q/k rows from HF's rotate-half RoPE layout to ggml's."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path: pathlib.Path, seed: int = 0) -> LlamaForCausalLM:
    """Write a tiny random Llama with a ChatML tokenizer to ``path``; return the HF reference model."""
    path = pathlib.Path(path)
    tok = _train_tokenizer()
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2] and len(tokens) == len(set(vocab.values()))
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random norm weights, so a mix-up of norms or an ignored norm shows in the logits
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    head_dim = config.hidden_size // config.num_attention_heads

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("fairtune-tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(len(tokens))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])  # tied: no output.weight
    names = {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    }  # fmt: skip
    for i in range(config.num_hidden_layers):
        for gguf_name, hf_name in names.items():
            w = sd[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                w = _permute(w, config.num_attention_heads)
            elif gguf_name == "attn_k":
                w = _permute(w, config.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
