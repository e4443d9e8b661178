"""Wall time of every audit's built-in suite on one model (default: the embedded model).

    python benchmarks/audits.py [--model embedded] [--audits stereoset bbq ...] [--max-new-tokens 48]

The model is loaded once and also serves as the reference for drift (capability), so drift
is ~0 here; the figure of interest is the time. Prints one row per audit: items, seconds,
items per second, and its headline metrics.
"""

from __future__ import annotations

import argparse
import time

from fairtune.audits import AUDITS
from fairtune.models import load_model
from fairtune.runner import run_audit


def headline(summary: dict) -> str:
    overall = summary["metrics"].get("overall", {})
    parts = []
    for name in summary["headline_metrics"]:
        estimate = overall.get(name)
        if estimate and estimate["value"] is not None:
            parts.append(f"{name}={estimate['value']:.3f}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--audits", nargs="*", default=sorted(AUDITS))
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    started = time.perf_counter()
    loaded = load_model(args.model)
    print(f"model {args.model} loaded in {time.perf_counter() - started:.1f} s")
    print(f"{'audit':<20}{'items':>7}{'seconds':>10}{'items/s':>9}  headline")
    total = 0.0
    for name in args.audits:
        started = time.perf_counter()
        run = run_audit(name, model=loaded, reference=loaded, max_new_tokens=args.max_new_tokens)
        seconds = time.perf_counter() - started
        total += seconds
        n = run.summary["n_items"]
        print(f"{name:<20}{n:>7}{seconds:>10.1f}{n / seconds:>9.1f}  {headline(run.summary)}", flush=True)
    print(f"{'all':<20}{'':>7}{total:>10.1f}")


if __name__ == "__main__":
    main()
