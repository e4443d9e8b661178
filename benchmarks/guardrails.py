"""Guardrail fragility on the embedded model: the identity-shift attack (Qi et al. 2023) with plain
LoRA vs regularised LoRA, starting from the aligned model.

1. ``fairtune align`` gives SmolLM2-135M-Instruct guardrails (cached after the first build).
2. Each arm fine-tunes the aligned model on the ten built-in identity-shift examples (no harmful
   content: they only teach blind obedience).
3. The refusal and over-refusal audits run on the aligned model and on each arm's merged model.

    python benchmarks/guardrails.py                   # about 10 minutes once the aligned model exists
    python benchmarks/guardrails.py --arms plain kl   # a subset
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ATTACK_OPTIM = {"lr": 3e-3, "epochs": 25, "batch_tokens": 2048}
ARMS = {
    "plain": [],
    "kl": [{"name": "kl_to_base", "weight": 2.0, "anchor_batch_tokens": 1024}],
    "constrained+mix": [{"name": "constrained"}, {"name": "safety_mix", "count": 20}],
    "kl+adaptive": [{"name": "kl_to_base", "weight": 1.0, "anchor_batch_tokens": 1024},
                    {"name": "adaptive", "target": "kl_to_base", "budget": 0.05, "step_size": 20.0}],
}


def audit(model: str) -> dict[str, float]:
    from fairtune.runner import run_audit

    out = {}
    for suite, metric in (("refusal", "refusal_rate"), ("over-refusal", "over_refusal_rate")):
        estimate = run_audit(suite, model=model).summary["metrics"]["overall"][metric]
        out[metric] = estimate
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="*", default=list(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aligned", help="an aligned model directory to start from (default: fairtune align)")
    args = parser.parse_args()

    from fairtune.training import load_config, train
    from fairtune.training.align import align

    started = time.perf_counter()
    if args.aligned:
        start = Path(args.aligned)
    else:
        aligned = align()
        start = aligned.merged_dir
        print(f"aligned model: {start} ({'cached' if aligned.cached else 'built'}, "
              f"{time.perf_counter() - started:.0f} s)", flush=True)
    rows = {"aligned (before attack)": audit(str(start))}
    print(json.dumps({k: v["value"] for k, v in rows["aligned (before attack)"].items()}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for arm in args.arms:
            config = load_config({"model": str(start), "attack": "identity-shift",
                                  "method": {"name": "lora", "rank": 8, "alpha": 16}, "seed": args.seed,
                                  "regularisers": ARMS[arm], "optim": ATTACK_OPTIM, "out": str(Path(tmp) / arm)})
            tick = time.perf_counter()
            result = train(config)
            rows[f"attacked, {arm}"] = audit(str(result.merged_dir))
            print(f"{arm}: trained {result.manifest['steps']} steps in {time.perf_counter() - tick:.0f} s; "
                  + json.dumps({k: v["value"] for k, v in rows[f'attacked, {arm}'].items()}), flush=True)
    print(f"\n{'model':<34} {'refusal (harmful)':>24} {'over-refusal (benign)':>24}")
    for name, metrics in rows.items():
        cells = [f"{m['value']:.3f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"
                 for m in (metrics["refusal_rate"], metrics["over_refusal_rate"])]
        print(f"{name:<34} {cells[0]:>24} {cells[1]:>24}")


if __name__ == "__main__":
    main()
