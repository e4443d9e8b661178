"""Training throughput on the embedded model: fairtune's LoRA loop vs a plain peft + Trainer loop on
the same data and settings, the overhead of each regulariser, and peak RSS.

Each configuration runs in its own process (so peak RSS is its own) for the same number of
optimizer steps on the same records; the first step (warm-up, allocation) is not timed.

    python benchmarks/training.py                 # all configurations, about 10 minutes on 2 cores
    python benchmarks/training.py --steps 6 --only fairtune-lora plain-trainer
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECORDS = 96          # chat records from the built-in safety anchor set
BATCH = 8             # records per step for the plain loop; fairtune gets the same tokens per step
LORA = {"name": "lora", "rank": 8, "alpha": 16, "dropout": 0.05}

CONFIGS = {
    "fairtune-lora": [],
    "fairtune-lora+kl_to_base": [{"name": "kl_to_base", "weight": 0.5}],
    "fairtune-lora+l2sp": [{"name": "l2sp", "weight": 0.01}],
    "fairtune-lora+ewc": [{"name": "ewc", "weight": 50.0, "fisher_examples": 64}],
    "fairtune-lora+constrained": [{"name": "constrained"}],
    "fairtune-lora+adaptive(kl)": [{"name": "kl_to_base", "weight": 0.5},
                                   {"name": "adaptive", "target": "kl_to_base", "budget": 0.02}],
}


def _data(workdir: Path) -> Path:
    from fairtune.curation.safety import load_anchors

    records = load_anchors(None)[:RECORDS]
    path = workdir / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _batch_tokens(data: Path) -> int:
    """Padded tokens of a BATCH-record batch of typical length, so both loops see similar batches."""
    from fairtune.curation.records import read_records
    from fairtune.models import load_model
    from fairtune.training.data import encode_record

    tokenizer = load_model("embedded").tokenizer
    lengths = sorted(len(encode_record(r, tokenizer, max_length=512).input_ids) for r in read_records(data))
    return lengths[len(lengths) // 2] * BATCH


def run_fairtune(name: str, data: Path, steps: int, batch_tokens: int, out: Path) -> dict:
    from fairtune.training import load_config, train

    config = load_config({"model": "embedded", "data": [str(data)], "method": LORA, "out": str(out),
                          "regularisers": CONFIGS[name],
                          "optim": {"lr": 2e-4, "max_steps": steps, "batch_tokens": batch_tokens, "epochs": 50}})
    started = time.perf_counter()
    result = train(config)
    timed = result.log[1:]
    train_tokens = sum(r["tokens"] for r in timed)
    seconds = sum(r["seconds"] for r in timed)
    return {"name": name, "steps": len(result.log), "wall_seconds": round(time.perf_counter() - started, 1),
            "timed_seconds": round(seconds, 2), "tokens_per_second": round(train_tokens / seconds, 1),
            "padding_share": result.manifest["padding_share"]}


def run_plain(data: Path, steps: int, out: Path) -> dict:
    """The loop a user would write: peft's get_peft_model + transformers' Trainer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from fairtune.curation.records import read_records
    from fairtune.models import load_model
    from fairtune.training.data import encode_record
    from fairtune.training.methods.lora import default_targets

    loaded = load_model("embedded")
    model = get_peft_model(loaded.model, LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"],
                                                   lora_dropout=LORA["dropout"], task_type="CAUSAL_LM",
                                                   target_modules=default_targets(loaded.model)))
    model.train()
    rows = [encode_record(r, loaded.tokenizer, max_length=512) for r in read_records(data)]
    dataset = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels} for e in rows]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.tick = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.tick)

    tokens_per_step: list[int] = []
    collator = DataCollatorForSeq2Seq(loaded.tokenizer, padding=True)

    def counting(features):
        batch = collator(features)
        tokens_per_step.append(int(batch["attention_mask"].sum()))
        return batch

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=BATCH, max_steps=steps,
                             learning_rate=2e-4, logging_steps=10**6, save_strategy="no", report_to=[],
                             use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                             remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=counting, callbacks=[Clock()])
    started = time.perf_counter()
    trainer.train()
    timed = times[1:]
    tokens = sum(tokens_per_step[1:len(times)])
    return {"name": "plain-trainer", "steps": len(times), "wall_seconds": round(time.perf_counter() - started, 1),
            "timed_seconds": round(sum(timed), 2), "tokens_per_second": round(tokens / sum(timed), 1)}


def one(name: str, steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = _data(workdir)
        if name == "plain-trainer":
            result = run_plain(data, steps, workdir / "plain")
        else:
            result = run_fairtune(name, data, steps, _batch_tokens(data), workdir / "run")
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--only", nargs="*", help="configurations to run (default: all)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.steps)
        return
    names = args.only or ["plain-trainer", *CONFIGS]
    results = []
    for name in names:
        run = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps)],
                             capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if run.returncode != 0:
            print(f"{name}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    base = next((r for r in results if r["name"] == "fairtune-lora"), None)
    print(f"\n{'configuration':<30} {'tok/s':>8} {'vs lora':>8} {'peak RSS MiB':>13}")
    for r in results:
        ratio = f"{base['tokens_per_second'] / r['tokens_per_second'] - 1:+.0%}" if base else "-"
        print(f"{r['name']:<30} {r['tokens_per_second']:>8.1f} {ratio:>8} {r['peak_rss_mib']:>13.0f}")
    print("\n'vs lora' is the time overhead per training token relative to plain fairtune LoRA "
          "(anchor tokens of kl_to_base are extra work, not counted as training tokens).")


if __name__ == "__main__":
    main()
