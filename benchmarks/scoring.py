"""Scoring throughput of the engine vs a naive one-text-at-a-time loop, against the FLOP bound.

    python benchmarks/scoring.py [--model embedded] [--texts 334] [--bf16]

Prints real (non-padding) tokens per second for:
- the engine (length-sorted batches under a token budget, log-softmax only where scored);
- a naive loop: one forward pass per text, full log-softmax over the vocabulary;
and the FLOP bound for this CPU: a measured float32 matmul rate divided by 2 x parameters
FLOPs per token (attention over these short texts adds under 1%).
"""

from __future__ import annotations

import argparse
import time

import torch

from fairtune.audits.stereotype_pairs import builtin_suite_path, read_pairs
from fairtune.engine import ScoringEngine
from fairtune.models import load_model


def matmul_flops_per_second(dtype: torch.dtype, size: int = 1024, seconds: float = 2.0) -> float:
    """Sustained rate of square matmuls of the width of a small LM's projections."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - started)


def naive_scores(model, tokenizer, texts: list[str]) -> tuple[list[float], int, float]:
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    totals, tokens, started = [], 0, time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            ids = [prefix, *tokenizer(text, add_special_tokens=False)["input_ids"]]
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            picked = logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
            totals.append(float(picked.double().sum()))
            tokens += len(ids)
    return totals, tokens, time.perf_counter() - started


def engine_run(loaded, texts: list[str]):
    engine = ScoringEngine.from_loaded(loaded)
    engine.score_texts(texts[:16])  # warm-up: first-call allocations and kernel selection
    engine = ScoringEngine.from_loaded(loaded)
    started = time.perf_counter()
    scored = engine.score_texts(texts)
    return scored, engine.stats, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--texts", type=int, default=334, help="how many sentences (from the built-in suite)")
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 and report the drift")
    args = parser.parse_args()

    pairs = read_pairs(builtin_suite_path())
    pool = [p.sent_more for p in pairs] + [p.sent_less for p in pairs]
    texts = (pool * (args.texts // len(pool) + 1))[: args.texts]

    loaded = load_model(args.model)
    params = sum(p.numel() for p in loaded.model.parameters())
    print(f"model {args.model}: {params / 1e6:.1f}M parameters, torch threads {torch.get_num_threads()}, "
          f"{len(texts)} texts")

    scored, stats, seconds = engine_run(loaded, texts)
    engine_rate = stats.real_tokens / seconds
    naive_totals, naive_tokens, naive_seconds = naive_scores(loaded.model, loaded.tokenizer, texts)
    naive_rate = naive_tokens / naive_seconds
    drift = max(abs(a.total_logprob - b) for a, b in zip(scored, naive_totals))

    rate32 = matmul_flops_per_second(torch.float32)
    bound = rate32 / (2 * params)
    print(f"matmul float32: {rate32 / 1e9:.1f} GFLOP/s -> FLOP bound {bound:.0f} tokens/s")
    print(f"{'scorer':<28}{'real tokens/s':>14}{'% of bound':>12}{'seconds':>10}{'padding':>9}")
    print(f"{'engine (float32)':<28}{engine_rate:>14.0f}{100 * engine_rate / bound:>11.0f}%{seconds:>10.2f}"
          f"{stats.as_dict()['padding_share']:>9.1%}")
    print(f"{'naive loop (float32)':<28}{naive_rate:>14.0f}{100 * naive_rate / bound:>11.0f}%"
          f"{naive_seconds:>10.2f}{0:>9.1%}")
    print(f"engine speed-up over naive: {engine_rate / naive_rate:.2f}x; max |total log-prob difference| "
          f"engine vs naive: {drift:.2e} nats")

    if args.bf16:
        fast = load_model(args.model, dtype="bfloat16")
        scored16, stats16, seconds16 = engine_run(fast, texts)
        rate16 = stats16.real_tokens / seconds16
        bound16 = matmul_flops_per_second(torch.bfloat16) / (2 * params)
        drift16 = max(abs(a.total_logprob - b.total_logprob) for a, b in zip(scored, scored16))
        print(f"{'engine (bfloat16)':<28}{rate16:>14.0f}{100 * rate16 / bound16:>11.0f}%{seconds16:>10.2f}"
              f"   (bf16 FLOP bound {bound16:.0f} tokens/s)")
        print(f"bfloat16 vs float32: {rate16 / engine_rate:.2f}x faster, max |total log-prob drift| "
              f"{drift16:.3f} nats")


if __name__ == "__main__":
    main()
