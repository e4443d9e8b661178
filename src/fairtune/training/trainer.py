"""The training loop: one screen of plain PyTorch on accelerate, so ``accelerate launch`` scales it.

Each optimizer step: for every micro-batch, (1) the base model's log-probs where a regulariser
needs them (gradient-free, taken *before* the tuned pass because norm/full methods swap weights
in place), (2) one forward pass over the training rows plus any anchor rows, (3) the task loss
plus each weighted regulariser, backward. Then clip, step, adapt weights, log, checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairtune.engine.device import model_device
from fairtune.errors import FairtuneError, InputError
from fairtune.training.checkpoint import Checkpointer, TrainState, rng_states
from fairtune.training.config import TrainConfig
from fairtune.training.data import IGNORE, Example, collate, padding_share, plan_batches
from fairtune.training.inputs import TrainingInputs, prepare_inputs
from fairtune.training.methods import get_method
from fairtune.training.objectives import OBJECTIVES, ObjectiveContext
from fairtune.training.regularisers import (REGULARISERS, AdaptiveWeight, Context, StepOutputs, token_kl,
                                            token_mean)

LOG_FILE, MANIFEST_FILE, ADAPTER_DIR, MERGED_DIR = "train_log.jsonl", "manifest.json", "adapter", "merged"


@dataclass
class TrainResult:
    out_dir: Path
    merged_dir: Path
    adapter_dir: Path | None
    manifest: dict[str, Any]
    log: list[dict[str, Any]] = field(default_factory=list)


class Interrupted(FairtuneError):
    exit_code = 130


def train(config: TrainConfig, *, progress: bool = False, resume: bool = True, loaded: Any = None,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``config.method`` on ``config.data`` and write adapter, merged model, log and manifest
    into ``config.out``. With ``resume``, a checkpoint in ``config.out`` is continued. ``on_step``
    receives each log record (live plots in a notebook, or a test that kills the run)."""
    import torch
    from accelerate.utils import set_seed

    from fairtune.models import load_model

    started = time.perf_counter()
    accelerator = _accelerator(config.mixed_precision)
    set_seed(config.seed)
    inputs = prepare_inputs(config)                      # reads and validates files: fails before the model
    loaded = loaded or load_model(config.model, dtype=config.dtype, trust_remote_code=config.trust_remote_code)
    method = get_method(config.method)
    out = Path(config.out)
    if not method.trains:
        return _finish_untrained(config, method, loaded, inputs, out, started)

    # On the accelerator's device before the base weights are snapshotted or a Fisher computed,
    # so every copy and every batch lives where the model does.
    model = method.prepare(loaded.model).to(accelerator.device)
    model.train()
    if config.regularisers:
        method.snapshot(model)   # the base weights, for KL / L2-SP / EWC / constrained (costs a copy)
    tokenizer = loaded.tokenizer
    encoded = inputs.encode(tokenizer, config)
    anchors, held_out = encoded.anchors, encoded.held_out_anchors
    cache_key = f"{loaded.fingerprint}|{config.method.model_dump_json()}|{inputs.anchor_sha256}"
    context = Context(method, anchors, tokenizer.pad_token_id, config.seed, cache_key)
    regs = [REGULARISERS[r.name](r, context) for r in config.regularisers if r.name in REGULARISERS]
    for reg in regs:
        reg.setup(model)
    objectives = [OBJECTIVES[o.name](o, ObjectiveContext(tokenizer, tokenizer.pad_token_id, config.seed,
                                                         f"objectives.{i}")) for i, o in enumerate(config.objectives)]
    examples = _setup_objectives(objectives, model, encoded)
    task = next((r for r in regs if r.replaces_sft), None)
    terms = _Terms(task, [r for r in regs if not r.replaces_sft], objectives, config.sft_weight)
    adaptive = [AdaptiveWeight(a, next(t for t in [*regs, *objectives] if t.name == a.target))
                for a in config.regularisers if a.name == "adaptive"]
    needs_anchors = any(r.needs_anchor_rows for r in regs) or any(
        a.config.constraint == "anchor_kl" for a in adaptive)
    anchor_batches = plan_batches(anchors, batch_tokens=_kl_budget(config), seed=config.seed, epoch=-1) \
        if needs_anchors and anchors else []

    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_total = sum(p.numel() for p in params), sum(p.numel() for p in model.parameters())
    rank, world = accelerator.process_index, accelerator.num_processes
    units = next((o.units(examples) for o in objectives if o.pairs_in_batches), None)
    per_epoch = [_shard(plan_batches(examples, batch_tokens=config.optim.batch_tokens, seed=config.seed, epoch=e,
                                     units=units), rank, world, config.optim.grad_accum)
                 for e in range(config.optim.epochs)]
    steps_per_epoch = len(per_epoch[0]) // config.optim.grad_accum
    total_steps = min(config.optim.max_steps or 10**12, steps_per_epoch * config.optim.epochs)
    if total_steps < 1:
        raise FairtuneError(f"too little training data for one step on {world} process(es)")
    groups = [{"params": params}] + [g for g in (o.param_group() for o in objectives) if g]
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = _scheduler(config, optimizer, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    checkpointer = Checkpointer(out / "checkpoints", accelerator)
    state = checkpointer.load(unwrapped, method, optimizer, scheduler, adaptive, objectives) if resume else None
    state = state or TrainState()
    log_path = out / LOG_FILE
    log = _read_log(log_path, state.step) if state.step else []
    base_nll = _anchor_nll(unwrapped, method, held_out, context.pad_id, base=True) \
        if any(a.config.constraint == "anchor_nll_increase" for a in adaptive) else None

    from fairtune.engine.progress import progress_bar

    bar_enabled = progress and accelerator.is_main_process
    try:
        with progress_bar(bar_enabled) as bar, _log_writer(log_path, log, accelerator.is_main_process) as write:
            bar_task = bar.add_task("training", total=total_steps, completed=state.step)
            while state.step < total_steps:
                batches = per_epoch[state.epoch]
                if state.batch >= steps_per_epoch * config.optim.grad_accum:
                    state.epoch, state.batch = state.epoch + 1, 0
                    continue
                state.rng = rng_states()
                tick = time.perf_counter()
                micro = batches[state.batch:state.batch + config.optim.grad_accum]
                values, tokens = _optimizer_step(model, unwrapped, method, examples, micro, anchors, anchor_batches,
                                                 state.step, terms, accelerator, context.pad_id)
                grad_norm = (accelerator.clip_grad_norm_(params, config.optim.max_grad_norm)
                             if config.optim.max_grad_norm else None)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step, state.batch = state.step + 1, state.batch + len(micro)
                record = _log_record(state, values, tokens, tick, scheduler, grad_norm, [*regs, *objectives],
                                     accelerator)
                for controller in adaptive:
                    if controller.due(state.step):
                        measured = _measure(controller, unwrapped, method, held_out, anchors, context.pad_id, base_nll)
                        controller.update(measured)
                    record.setdefault("adaptive", {})[controller.target.name] = controller.state()
                write(record)
                state.rng = None   # the step is complete: a checkpoint now takes the current RNG
                if on_step is not None:
                    on_step(record)
                bar.update(bar_task, advance=1, description=f"training loss {record['loss']:.3f} "
                                                            f"{record['tokens_per_second']:.0f} tok/s")
                if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.step < total_steps:
                    checkpointer.save(state, unwrapped, method, optimizer, scheduler, adaptive, objectives)
    except KeyboardInterrupt:
        optimizer.zero_grad(set_to_none=True)
        checkpointer.save(state, unwrapped, method, optimizer, scheduler, adaptive, objectives, interrupted=True)
        raise Interrupted(f"interrupted at step {state.step}; checkpoint saved, run the same command "
                          "again to resume") from None

    accelerator.wait_for_everyone()
    manifest = {
        "method": config.method.name, "steps": state.step, "epochs": config.optim.epochs,
        "trainable_parameters": n_trainable, "total_parameters": n_total,
        "trainable_share": n_trainable / n_total, "processes": world,
        "examples": inputs.counts(examples), "truncated": sum(e.truncated for e in examples),
        "padding_share": round(padding_share(examples, [b for e in per_epoch for b in e]), 4),
        "regularisers": {r.name: {"final_weight": r.weight, **_reg_facts(r)} for r in regs},
        # each objective's value on its held-back rows at the end (the adversary: its probe's accuracy)
        "objectives": {o.name: {"final_weight": o.weight, "held_out": _held_out_value(o, unwrapped)}
                       for o in objectives},
        "final": log[-1] if log else None,
    }
    if accelerator.is_main_process:
        result = _save_outputs(config, method, unwrapped, loaded, inputs, out, manifest, started)
        checkpointer.clear()
    else:
        result = TrainResult(out, out / MERGED_DIR, out / ADAPTER_DIR, manifest)
    accelerator.wait_for_everyone()
    result.log = log
    return result


@dataclass
class _Terms:
    """The loss terms of a step: the task loss (None: plain SFT), the regularisers added to it,
    and the fairness objectives."""

    task: Any
    penalties: list
    objectives: list
    sft_weight: float = 1.0


def _accelerator(mixed_precision: str) -> Any:
    """An Accelerator with this run's precision. accelerate keeps one process-wide state and refuses
    a second precision in the same process, which a notebook, a test session or a recipe whose arms
    differ in precision needs; in a single process that state holds nothing else worth keeping, so it
    is rebuilt. Under ``accelerate launch`` the launcher's state stays and a mismatch is named."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    current = AcceleratorState._shared_state.get("_mixed_precision")     # None before the first Accelerator
    if current is not None and current != mixed_precision:
        if PartialState().num_processes > 1:
            raise InputError(f"mixed_precision: {mixed_precision!r} differs from {current!r}, already set in this "
                             "distributed process; use one precision per launch")
        AcceleratorState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision)


def _setup_objectives(objectives: list, model: Any, encoded: Any) -> list[Example]:
    """Hold back each objective's measuring rows, set the objectives up on the rest, and return
    the training examples that train."""
    held_examples, held_contexts = set(), set()
    for objective in objectives:
        examples, contexts = objective.hold_back(encoded.train, encoded.contexts)
        held_examples |= examples
        held_contexts |= contexts
    keep = lambda rows, held: [r for i, r in enumerate(rows) if i not in held]  # noqa: E731
    examples, contexts = keep(encoded.train, held_examples), keep(encoded.contexts, held_contexts)
    for objective in objectives:
        objective.setup(model, examples, contexts, [encoded.train[i] for i in sorted(held_examples)],
                        [encoded.contexts[i] for i in sorted(held_contexts)])
    return examples


def _optimizer_step(model, unwrapped, method, examples, micro, anchors, anchor_batches, step, terms: _Terms,
                    accelerator, pad_id) -> tuple[dict[str, float], int]:
    """Forward and backward over the micro-batches of one optimizer step; returns the mean of
    each loss term (and each objective's logged extras) and the number of real tokens seen."""
    totals: dict[str, float] = {}
    tokens = 0
    device = accelerator.device
    task, penalties = terms.task, terms.penalties
    for index, batch_indices in enumerate(micro):
        batch = collate([examples[i] for i in batch_indices], pad_id, device)
        n_train = len(batch_indices)
        # Anchor rows are a batch of their own: padded together with short training rows, a
        # long anchor answer would widen every row (17 GB peak on templates + the 752 anchors).
        anchor_batch = None
        if anchor_batches and any(r.needs_anchor_rows for r in penalties):
            chosen = anchor_batches[(step * len(micro) + index) % len(anchor_batches)]
            anchor_batch = collate([anchors[i] for i in chosen], pad_id, device)
        tokens += int(batch["attention_mask"].sum())   # anchor rows are overhead, not progress
        need_base_train = task is not None and task.needs_base_train
        base_train = None
        if need_base_train:
            base_token, base_mask, _ = _labelled(_base_logits(unwrapped, method, batch), batch["labels"], n_train,
                                                 True, False)
            base_train = _split_unlikely(base_token, base_mask, batch["unlikely"][:n_train])[0]
        base_anchor = _labelled(_base_logits(unwrapped, method, anchor_batch), anchor_batch["labels"], 0, False,
                                True)[2] if anchor_batch is not None else None
        sync = contextlib.nullcontext() if index == len(micro) - 1 else accelerator.no_sync(model)
        with sync:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            token, mask, _ = _labelled(logits, batch["labels"], n_train, True, False)
            token, unlikely, mask, unlikely_mask = _split_unlikely(token, mask, batch["unlikely"][:n_train])
            anchor = None
            if anchor_batch is not None:
                anchor_logits = model(input_ids=anchor_batch["input_ids"],
                                      attention_mask=anchor_batch["attention_mask"]).logits
                anchor = _labelled(anchor_logits, anchor_batch["labels"], 0, False, True)[2]
            outputs = StepOutputs(token, _response_positions(mask), base_train, anchor, base_anchor, unlikely,
                                  _response_positions(unlikely_mask) if unlikely.numel() else unlikely.long(),
                                  logits, batch["input_ids"], batch["attention_mask"], list(batch_indices),
                                  step * len(micro) + index)
            values: dict[str, Any] = {"sft": -token_mean(outputs.train_token_logprobs)}
            loss = values["sft"] if task is None else task.penalty(model, outputs)
            if task is not None:
                values[task.name] = loss
            loss = terms.sft_weight * loss
            for term in [*penalties, *terms.objectives]:
                values[term.name] = term.penalty(model, outputs)
                loss = loss + term.weight * values[term.name]
                values.update({f"{term.name}.{k}": v for k, v in getattr(term, "last", {}).items()})
            values["loss"] = loss
            accelerator.backward(loss / len(micro))
        for name, value in values.items():
            value = value.detach() if hasattr(value, "detach") else value
            totals[name] = totals.get(name, 0.0) + float(value) / len(micro)
    return totals, tokens


def _base_logits(unwrapped, method, batch):
    """The base model's logits (adapters off / starting weights swapped in), without gradients."""
    import torch

    was_training = unwrapped.training
    unwrapped.eval()
    try:
        with torch.no_grad(), method.base_model(unwrapped):
            return unwrapped(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        unwrapped.train(was_training)


def _labelled(logits, labels, n_train: int, want_train: bool, want_anchor: bool):
    """``(log p(label) of each labelled training token, the training rows' label mask, full
    log-softmax rows of each labelled anchor token)``. Only labelled positions are gathered
    before any float32 softmax, so memory follows the labelled tokens, not batch x vocabulary."""
    import torch
    import torch.nn.functional as F

    shifted, targets = logits[:, :-1], labels[:, 1:]
    mask = targets[:n_train] != IGNORE
    token = anchor = None
    if want_train:
        token = -F.cross_entropy(shifted[:n_train][mask].float(), targets[:n_train][mask], reduction="none")
    if want_anchor:
        anchor = torch.log_softmax(shifted[n_train:][targets[n_train:] != IGNORE].float(), -1)
    return token, mask, anchor


def _split_unlikely(token, mask, unlikely_rows):
    """``(log-probs of the tokens to learn, of the tokens to make unlikely, the label masks of the
    rows to learn and of the rows to make unlikely)``: rows of ``loss: unlikelihood`` records go to
    the unlikelihood regulariser, never into the task loss."""
    flags = unlikely_rows[:, None].expand_as(mask)[mask]
    return token[~flags], token[flags], mask & ~unlikely_rows[:, None], mask & unlikely_rows[:, None]


def _response_positions(mask):
    """For each labelled token, its index within its run of labelled tokens (0 = first token of
    a response): the distance to the last unlabelled position before it, minus one."""
    import torch

    index = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last_unlabelled = torch.where(mask, torch.full_like(index, -1), index).cummax(dim=1).values
    return (index - last_unlabelled - 1)[mask]


def _measure(controller, unwrapped, method, held_out, anchors, pad_id, base_nll) -> float:
    if controller.config.constraint == "held_out":
        return controller.target.measure(unwrapped)      # a fairness objective on its held-back rows
    examples = held_out or anchors[:8]
    if controller.config.constraint == "anchor_nll_increase":
        return _anchor_nll(unwrapped, method, examples, pad_id, base=False) - base_nll
    return _anchor_kl(unwrapped, method, examples, pad_id)


def _anchor_nll(unwrapped, method, examples: list[Example], pad_id: int, *, base: bool) -> float:
    import torch

    batch = collate(examples, pad_id, model_device(unwrapped))
    was_training = unwrapped.training
    unwrapped.eval()
    try:
        with torch.no_grad(), (method.base_model(unwrapped) if base else contextlib.nullcontext()):
            logits = unwrapped(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        unwrapped.train(was_training)
    token, _, _ = _labelled(logits, batch["labels"], len(examples), True, False)
    return float(-token.mean())


def _anchor_kl(unwrapped, method, examples: list[Example], pad_id: int) -> float:
    import torch

    batch = collate(examples, pad_id, model_device(unwrapped))
    base_rows = _labelled(_base_logits(unwrapped, method, batch), batch["labels"], 0, False, True)[2]
    was_training = unwrapped.training
    unwrapped.eval()
    try:
        with torch.no_grad():
            logits = unwrapped(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        unwrapped.train(was_training)
    _, _, tuned = _labelled(logits, batch["labels"], 0, False, True)
    return float(token_kl(base_rows, tuned))


def _log_record(state, terms, tokens, tick, scheduler, grad_norm, weighted, accelerator) -> dict[str, Any]:
    import torch

    seconds = time.perf_counter() - tick
    values = torch.tensor([terms[k] for k in sorted(terms)] + [tokens], device=accelerator.device)
    values = accelerator.reduce(values, reduction="sum") if accelerator.num_processes > 1 else values
    world = accelerator.num_processes
    reduced = {k: float(v) / world for k, v in zip(sorted(terms), values[:-1].tolist())}
    total_tokens = int(values[-1])
    state.tokens += total_tokens
    return {"step": state.step, "epoch": state.epoch, "lr": scheduler.get_last_lr()[0], **reduced,
            "weights": {t.name: t.weight for t in weighted},
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "tokens": total_tokens, "tokens_seen": state.tokens, "seconds": round(seconds, 4),
            "tokens_per_second": round(total_tokens / seconds, 1) if seconds else 0.0}


def _held_out_value(objective, unwrapped) -> float | None:
    try:
        return round(objective.measure(unwrapped), 6)
    except NotImplementedError:
        return None


def _reg_facts(reg) -> dict[str, Any]:
    return {"fisher_cached": reg.cached} if hasattr(reg, "cached") else {}


def _kl_budget(config: TrainConfig) -> int:
    kl = config.regulariser("kl_to_base")
    if kl and kl.anchor_batch_tokens:
        return kl.anchor_batch_tokens
    # A quarter of the training batch: KL's extra forward, backward and base passes stay a
    # fraction of a step (anchor rows cost about as much per token as training rows).
    return max(64, config.optim.batch_tokens // 4)


def _shard(batches: list[list[int]], rank: int, world: int, accum: int) -> list[list[int]]:
    """This process's batches: every world-th one, cut so all processes take the same number of
    whole optimizer steps (DDP needs them in lockstep)."""
    per_process = (len(batches) // world) // accum * accum
    return batches[rank::world][:per_process]


def _scheduler(config: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(config.optim.schedule, optimizer, num_warmup_steps=config.optim.warmup_steps,
                         num_training_steps=total_steps)


@contextlib.contextmanager
def _log_writer(path: Path, log: list[dict], enabled: bool):
    """Append records to the in-memory log and to ``path`` line by line (flushed, so a killed run
    leaves a readable log; a resumed run first cuts it back to its checkpoint)."""
    if not enabled:
        yield log.append
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    from fairtune.io import write_jsonl

    write_jsonl(path, log)
    with open(path, "a", encoding="utf-8") as handle:
        def write(record: dict) -> None:
            log.append(record)
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        yield write


def _read_log(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    from fairtune.io import read_jsonl

    return [r for r in read_jsonl(path) if r["step"] <= up_to_step]


def _save_outputs(config, method, model, loaded, inputs: TrainingInputs, out: Path, manifest: dict,
                  started: float) -> TrainResult:
    from fairtune.io import atomic_dir, write_json

    adapter_dir = out / ADAPTER_DIR
    with atomic_dir(adapter_dir) as tmp:
        method.save_adapter(model, tmp)
    merged = method.merged(model)
    merged_dir = out / MERGED_DIR
    with atomic_dir(merged_dir) as tmp:
        merged.save_pretrained(str(tmp))
        loaded.tokenizer.save_pretrained(str(tmp))
    manifest = {**_manifest_header(config, loaded, inputs, started), **manifest,
                "outputs": {"adapter": ADAPTER_DIR, "merged": MERGED_DIR, "log": LOG_FILE}}
    write_json(out / MANIFEST_FILE, manifest)
    return TrainResult(out, merged_dir, adapter_dir, manifest)


def _finish_untrained(config, method, loaded, inputs, out: Path, started: float) -> TrainResult:
    """The prompt method: the base weights with the system prompt in the chat template."""
    from fairtune.io import atomic_dir, write_json

    try:
        method.apply_to_tokenizer(loaded.tokenizer)
    except ValueError as exc:
        raise FairtuneError(str(exc)) from None
    merged_dir = out / MERGED_DIR
    with atomic_dir(merged_dir) as tmp:
        loaded.model.save_pretrained(str(tmp))
        loaded.tokenizer.save_pretrained(str(tmp))
    n_total = sum(p.numel() for p in loaded.model.parameters())
    manifest = {**_manifest_header(config, loaded, inputs, started), "method": "prompt", "steps": 0,
                "trainable_parameters": 0, "total_parameters": n_total, "trainable_share": 0.0,
                "system_prompt": method.system_prompt, "outputs": {"merged": MERGED_DIR}}
    write_json(out / MANIFEST_FILE, manifest)
    return TrainResult(out, merged_dir, None, manifest)


def _manifest_header(config, loaded, inputs: TrainingInputs, started: float) -> dict[str, Any]:
    import platform
    import resource

    import accelerate
    import peft
    import torch
    import transformers

    from fairtune import __version__

    return {
        "config": json.loads(config.model_dump_json()),
        "model": loaded.describe(),
        "data": inputs.sources(),
        "seed": config.seed,
        "versions": {"fairtune": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "accelerate": accelerate.__version__,
                     "python": platform.python_version()},
        "wall_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
