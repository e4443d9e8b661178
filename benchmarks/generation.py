"""Greedy generation speed by batch size, on the prompts of a built-in generation suite.

    python benchmarks/generation.py [--model embedded] [--suite over-refusal] [--batch-sizes 8 16 32 64]

Prints, per batch size: seconds, new tokens per second, and how many replies equal those of the
first batch size (greedy decoding should not depend on the batching; left padding could in
principle change a float32 sum's order and so a reply).
"""

from __future__ import annotations

import argparse
import time

from fairtune.audits import AUDITS, AuditOptions
from fairtune.engine import GenerationEngine
from fairtune.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--suite", default="over-refusal", help="a suite whose items have a .prompt")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    prompts = [item.prompt for item in AUDITS[args.suite]().load(None, AuditOptions()).items]
    loaded = load_model(args.model)
    print(f"{len(prompts)} prompts of {args.suite}, {args.max_new_tokens} new tokens at most")
    print(f"{'batch':>6}{'seconds':>9}{'tokens/s':>10}  same replies")
    reference = None
    for size in args.batch_sizes:
        engine = GenerationEngine.from_loaded(loaded, batch_size=size, max_new_tokens=args.max_new_tokens)
        started = time.perf_counter()
        replies = engine.generate(prompts)
        seconds = time.perf_counter() - started
        texts = [r.text for r in replies]
        reference = reference or texts
        same = sum(a == b for a, b in zip(texts, reference))
        tokens = sum(r.n_new_tokens for r in replies)
        print(f"{size:>6}{seconds:>9.1f}{tokens / seconds:>10.0f}  {same}/{len(texts)}", flush=True)


if __name__ == "__main__":
    main()
