"""The training engine on a tiny random model: methods, regularisers, outputs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairtune.errors import InputError
from fairtune.training import load_config, train
from fairtune.training.trainer import Interrupted

TOPICS = ["the river", "a quiet library", "the morning train", "a garden in spring", "the old bridge",
          "a busy kitchen", "the mountain path", "a rainy afternoon", "the night market", "a small boat"]


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-data")
    train_rows = [chat(f"Tell me about {t}.", f"Here is a note about {t}: it is calm and pleasant.") for t in TOPICS]
    train_rows += [{"prompt": f"Describe {t}:", "completion": f" {t} is worth a visit."} for t in TOPICS[:4]]
    train_rows += [{"text": f"A sentence about {t} for plain language modelling."} for t in TOPICS[:4]]
    anchors = [{"prompt": f"How do I harm someone with {t}, take {n}?", "response": "I can't help with that.",
                "label": "harmful"} for t in TOPICS for n in (1, 2)]
    anchors += [{"prompt": f"What is {t} like, take {n}?", "response": f"{t.capitalize()} is lovely.",
                 "label": "benign"} for t in TOPICS for n in (1, 2)]
    files = {"train": root / "train.jsonl", "anchors": root / "anchors.jsonl"}
    for name, rows in (("train", train_rows), ("anchors", anchors)):
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files


def config(tiny_dir, data_files, out, **overrides):
    raw = {"model": str(tiny_dir), "data": [str(data_files["train"])], "anchors": str(data_files["anchors"]),
           "optim": {"lr": 5e-3, "batch_tokens": 256, "max_steps": 4, "max_length": 64}, "out": str(out),
           "method": {"name": "lora", "rank": 4}}
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) and isinstance(value, dict) else value
    return load_config(raw)


def final_weights(result) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(result.merged_dir.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def training_nll(loaded, data_files) -> float:
    from fairtune.curation.records import read_records
    from fairtune.training.data import collate, encode_record

    rows = [encode_record(r, loaded.tokenizer, max_length=64) for r in read_records(data_files["train"])]
    batch = collate(rows, loaded.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(-logprobs[labels != -100].mean())


@pytest.mark.parametrize("method, share_below", [("lora", 0.2), ("dora", 0.2), ("norm", 0.01), ("full", 1.01)])
def test_each_method_trains_logs_and_saves_a_loadable_merged_model(tiny_dir, data_files, tmp_path, method,
                                                                   share_below):
    from fairtune.models import load_model

    lr = 5e-2 if method == "norm" else 5e-3    # a few hundred weights need bigger steps
    result = train(config(tiny_dir, data_files, tmp_path / method, method={"name": method}, optim={"lr": lr}))
    manifest = json.loads((tmp_path / method / "manifest.json").read_text())
    assert manifest["steps"] == 4 and manifest["method"] == method
    assert 0 < manifest["trainable_share"] < share_below
    log = [json.loads(line) for line in (tmp_path / method / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["tokens_per_second"] > 0 and r["loss"] == pytest.approx(r["sft"]) for r in log)
    # The merged model fits the training data better than the base did.
    assert training_nll(load_model(str(result.merged_dir)), data_files) < training_nll(
        load_model(str(tiny_dir)), data_files)
    assert not (tmp_path / method / "checkpoints").exists()


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merged_logits_equal_adapter_on_base(tiny_dir, data_files, tmp_path, method):
    from peft import PeftModel

    from fairtune.models import load_model

    result = train(config(tiny_dir, data_files, tmp_path, method={"name": method}))
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    adapted = PeftModel.from_pretrained(load_model(str(tiny_dir)).model, str(result.adapter_dir)).eval()
    merged = load_model(str(result.merged_dir)).model
    base = load_model(str(tiny_dir)).model
    with torch.no_grad():
        a, m, b = (model(input_ids=ids).logits for model in (adapted, merged, base))
    assert (a - m).abs().max() < 1e-4
    assert (a - b).abs().max() > 1e-3   # the adapter did something


def test_loss_is_only_on_assistant_turns(tiny_loaded):
    from fairtune.training.data import IGNORE, encode_record

    tokenizer = tiny_loaded.tokenizer
    example = encode_record(chat("hello there", "general kenobi"), tokenizer, max_length=200)
    labelled = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])
    assert labelled.startswith("general kenobi") and "hello" not in labelled
    assert labelled.rstrip().endswith("<|im_end|>")   # it learns to stop


def test_regularisers_are_logged_as_their_own_terms(tiny_dir, data_files, tmp_path):
    cfg = config(tiny_dir, data_files, tmp_path, regularisers=[
        {"name": "kl_to_base", "weight": 0.5}, {"name": "l2sp", "weight": 0.1}, {"name": "ewc", "weight": 1.0,
                                                                                 "fisher_examples": 4}])
    result = train(cfg)
    log = result.log
    for record in log:
        expected = record["sft"] + 0.5 * record["kl_to_base"] + 0.1 * record["l2sp"] + record["ewc"]
        assert record["loss"] == pytest.approx(expected, rel=1e-5)
    # LoRA starts as the base model: every penalty is zero at the first step, then grows.
    assert log[0]["kl_to_base"] == pytest.approx(0, abs=1e-6) and log[0]["l2sp"] == 0 and log[0]["ewc"] == 0
    assert log[-1]["kl_to_base"] > 0 and log[-1]["l2sp"] > 0 and log[-1]["ewc"] > 0
    assert result.manifest["regularisers"]["ewc"]["fisher_cached"] is False
    again = train(config(tiny_dir, data_files, tmp_path / "again", regularisers=[
        {"name": "ewc", "weight": 1.0, "fisher_examples": 4}]))
    assert again.manifest["regularisers"]["ewc"]["fisher_cached"] is True


def test_kl_to_base_keeps_anchor_behaviour_closer(tiny_dir, data_files, tmp_path):
    plain = train(config(tiny_dir, data_files, tmp_path / "plain", optim={"max_steps": 8}))
    kept = train(config(tiny_dir, data_files, tmp_path / "kl", optim={"max_steps": 8},
                        regularisers=[{"name": "kl_to_base", "weight": 20.0}]))
    from fairtune.models import load_model
    from fairtune.training.data import collate, encode_record

    base = load_model(str(tiny_dir))
    anchors = [json.loads(line) for line in data_files["anchors"].read_text().splitlines()][:10]
    rows = [encode_record(chat(a["prompt"], a["response"]), base.tokenizer, max_length=64) for a in anchors]
    batch = collate(rows, base.tokenizer.pad_token_id)

    def anchor_logprobs(model):
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return torch.log_softmax(logits[:, :-1], -1)[batch["labels"][:, 1:] != -100]

    reference = anchor_logprobs(base.model)
    kl = {name: float((reference.exp() * (reference - anchor_logprobs(load_model(str(r.merged_dir)).model)))
                      .sum(-1).mean()) for name, r in (("plain", plain), ("kl", kept))}
    assert kl["kl"] < kl["plain"]


def test_constrained_sft_starts_as_sft_and_weights_early_tokens():
    from fairtune.training.config import Constrained as ConstrainedConfig
    from fairtune.training.regularisers.base import StepOutputs
    from fairtune.training.regularisers.constrained import Constrained

    reg = Constrained(ConstrainedConfig(name="constrained"), None)
    positions = torch.tensor([0, 1, 2, 7])
    assert reg.betas(positions).tolist() == pytest.approx([0.5, 2.0, 2.0, 0.1])
    tuned = torch.tensor([-1.0, -2.0, -0.5, -3.0], requires_grad=True)
    outputs = StepOutputs(tuned, positions, tuned.detach().clone(), None, None)
    reg.penalty(None, outputs).backward()
    # At the base model the gradient is SFT's: -1/N per token.
    assert torch.allclose(tuned.grad, torch.full((4,), -0.25))
    # Once the tuned model prefers a token by a log-ratio of 1, its pull shrinks by sigmoid(-beta):
    # most on the first tokens, whose beta is largest.
    ahead = (tuned.detach() + 1.0).requires_grad_()
    reg.penalty(None, StepOutputs(ahead, positions, tuned.detach(), None, None)).backward()
    expected = -0.25 * 2 * torch.sigmoid(-reg.betas(positions))
    assert torch.allclose(ahead.grad, expected)
    assert ahead.grad[1].abs() < ahead.grad[3].abs()


def test_adaptive_weight_rises_over_budget_and_falls_under(tiny_dir, data_files, tmp_path):
    tight = train(config(tiny_dir, data_files, tmp_path / "tight", optim={"max_steps": 6}, regularisers=[
        {"name": "kl_to_base", "weight": 0.0},
        {"name": "adaptive", "target": "kl_to_base", "budget": 0.0, "step_size": 50.0}]))
    path = [r["adaptive"]["kl_to_base"]["weight"] for r in tight.log]
    assert path[-1] > path[0] >= 0 and all(b >= a for a, b in zip(path, path[1:]))
    assert [r["weights"]["kl_to_base"] for r in tight.log[1:]] == path[:-1]
    loose = train(config(tiny_dir, data_files, tmp_path / "loose", optim={"max_steps": 4}, regularisers=[
        {"name": "kl_to_base", "weight": 1.0},
        {"name": "adaptive", "target": "kl_to_base", "constraint": "anchor_nll_increase", "budget": 10.0,
         "step_size": 0.05}]))
    weights = [r["adaptive"]["kl_to_base"]["weight"] for r in loose.log]
    assert weights[-1] < 1.0 and all(b <= a for a, b in zip(weights, weights[1:]))


def test_safety_mix_adds_anchor_examples(tiny_dir, data_files, tmp_path):
    result = train(config(tiny_dir, data_files, tmp_path, regularisers=[{"name": "safety_mix", "count": 7}]))
    assert result.manifest["examples"]["anchor"] == 7 and result.manifest["examples"]["train"] == 18


def test_prompt_method_trains_nothing_and_sets_a_default_system_prompt(tiny_dir, data_files, tmp_path):
    from fairtune.models import load_model

    result = train(config(tiny_dir, data_files, tmp_path, method={"name": "prompt", "system_prompt": "Be fair."}))
    assert result.manifest["trainable_parameters"] == 0
    tokenizer = load_model(str(result.merged_dir)).tokenizer
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "Be fair." in rendered
    own = tokenizer.apply_chat_template([{"role": "system", "content": "Mine."},
                                         {"role": "user", "content": "hi"}], tokenize=False)
    assert "Mine." in own and "Be fair." not in own


@pytest.mark.parametrize("raw, field, text", [
    ({"method": {"name": "lora", "rnak": 4}}, "method.rnak", "Extra inputs"),
    ({"optim": {"lr": "fast"}}, "optim.lr", "valid number"),
    ({"regularisers": [{"name": "kl_to_base", "weight": -1}]}, "regularisers.0.kl_to_base.weight", "greater"),
    ({"regularisers": [{"name": "adaptive", "target": "ewc"}]}, None, "not among the regularisers"),
    ({"data": ["/nonexistent/train.jsonl"]}, "data.0", "no such file"),
    ({"colour": "blue"}, "colour", "Extra inputs"),
])
def test_bad_config_fails_in_one_line_naming_the_key(tmp_path, raw, field, text):
    import yaml

    path = tmp_path / "config.yaml"
    base = {"data": [str(path)]}
    path.write_text(yaml.safe_dump({**base, **raw}))
    with pytest.raises(InputError) as info:
        load_config(path)
    assert info.value.field == field and text in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_bad_config_exits_2_before_loading_a_model(tmp_path):
    from typer.testing import CliRunner

    from fairtune.cli import app

    path = tmp_path / "config.yaml"
    path.write_text(f"model: /nonexistent\ndata: [missing.jsonl]\nout: {tmp_path / 'run'}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and "data.0" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_cli_align_with_a_bad_anchor_file_exits_2_and_builds_nothing(tmp_path, tiny_dir):
    import os

    from typer.testing import CliRunner

    from fairtune.cli import app

    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text('{"prompt": "p", "label": "harmful"}\n')
    aligned = Path(os.environ["FAIRTUNE_CACHE"]) / "aligned"
    before = sorted(aligned.iterdir()) if aligned.exists() else []
    result = CliRunner().invoke(app, ["align", "--model", str(tiny_dir), "--anchors", str(anchors), "--no-verify"])
    assert result.exit_code == 2 and f"{anchors}, row 1, field 'response'" in " ".join(result.output.split())
    assert (sorted(aligned.iterdir()) if aligned.exists() else []) == before


def test_ctrl_c_saves_a_checkpoint_and_resuming_matches_an_uninterrupted_run(tiny_dir, data_files, tmp_path):
    overrides = dict(optim={"max_steps": 6, "epochs": 3}, regularisers=[{"name": "kl_to_base", "weight": 0.3}],
                     method={"name": "lora", "dropout": 0.3})
    whole = train(config(tiny_dir, data_files, tmp_path / "whole", **overrides))

    def interrupt(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    cfg = config(tiny_dir, data_files, tmp_path / "cut", **overrides)
    with pytest.raises(Interrupted, match="step 3"):
        train(cfg, on_step=interrupt)
    assert json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text()) == {"checkpoint": "step-0000003"}
    resumed = train(cfg)
    assert [r["step"] for r in resumed.log] == list(range(1, 7))
    for name, tensor in final_weights(whole).items():
        assert torch.equal(tensor, final_weights(resumed)[name]), name


KILL_SCRIPT = """
import os, signal, sys
from fairtune.training import load_config, train
config = load_config(sys.argv[1])
def kill(record):
    if record["step"] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
train(config, on_step=kill)
"""


def test_sigkill_then_resume_ends_with_the_same_weights(tiny_dir, data_files, tmp_path):
    import yaml

    overrides = dict(optim={"max_steps": 8, "epochs": 3}, checkpoint_every=3, method={"name": "lora", "dropout": 0.2},
                     regularisers=[{"name": "l2sp", "weight": 0.1}])
    whole = train(config(tiny_dir, data_files, tmp_path / "whole", **overrides))
    cfg = config(tiny_dir, data_files, tmp_path / "killed", **overrides)
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, str(script), str(path), "5"], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / "killed" / "checkpoints" / "latest.json").read_text())["checkpoint"] == "step-0000003"
    resumed = train(load_config(path))
    assert [r["step"] for r in resumed.log] == list(range(1, 9))
    for name, tensor in final_weights(whole).items():
        assert torch.equal(tensor, final_weights(resumed)[name]), name


def test_two_processes_under_accelerate_launch_train_like_one(tiny_dir, data_files, tmp_path):
    """The same entry point under ``accelerate launch --num_processes 2`` (CPU, gloo)."""
    import shutil

    import yaml

    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    overrides = dict(optim={"max_steps": 6, "batch_tokens": 128, "epochs": 6}, regularisers=[{"name": "kl_to_base",
                                                                                   "weight": 0.2}])
    single = train(config(tiny_dir, data_files, tmp_path / "one", **overrides))
    cfg = config(tiny_dir, data_files, tmp_path / "two", **overrides)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    # --multi_gpu picks accelerate's torchrun launcher; with no GPU the processes join over gloo.
    run = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fairtune.training",
                          str(path), "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    log = [json.loads(line) for line in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert manifest["processes"] == 2 and len(log) == 6
    # Each step saw two processes' batches; the loss falls as in the one-process run.
    assert sum(r["tokens"] for r in log) > sum(r["tokens"] for r in single.log[:6]) * 1.5
    assert log[-1]["sft"] < log[0]["sft"] and single.log[-1]["sft"] < single.log[0]["sft"]
    assert abs(log[0]["sft"] - single.log[0]["sft"]) < 0.5


def test_response_positions_restart_at_each_assistant_turn():
    from fairtune.training.trainer import _response_positions

    mask = torch.tensor([[0, 1, 1, 1, 0, 1, 1], [1, 1, 0, 0, 1, 0, 0]], dtype=torch.bool)
    assert _response_positions(mask).tolist() == [0, 1, 2, 0, 1, 0, 1, 0]


def test_align_weights_helpful_anchors_and_is_built_once(tiny_dir, data_files):
    from fairtune.curation.records import read_records
    from fairtune.training.align import align

    plain = {"epochs": 1, "general": 4, "refusal_unlikelihood": 0}   # no unlikely rows to count here
    first = align(str(tiny_dir), anchors=data_files["anchors"], helpful_weight=3, **plain)
    assert not first.cached and (first.merged_dir / "config.json").exists()
    kinds = [r["meta"].get("kind") for r in read_records(first.run_dir / "align_data.jsonl")]
    assert kinds.count("anchor-refusal") == 20 and kinds.count("anchor-helpful") == 60
    # General replies come from the model itself, after selfgen's filters (few survive a random model).
    assert kinds.count("generated") <= 4 and len(kinds) == 80 + kinds.count("generated")
    again = align(str(tiny_dir), anchors=data_files["anchors"], helpful_weight=3, **plain)
    assert again.cached and again.merged_dir == first.merged_dir
    other = align(str(tiny_dir), anchors=data_files["anchors"], helpful_weight=2, **plain)
    assert not other.cached and other.run_dir != first.run_dir


def test_identity_shift_attack_is_built_in_and_harmless():
    from fairtune.curation.records import read_records
    from fairtune.judges.text_scores import is_refusal
    from fairtune.training.config import builtin_attacks

    records = read_records(builtin_attacks()["identity-shift"])
    assert len(records) == 10
    replies = [m["content"] for r in records for m in r["messages"] if m["role"] == "assistant"]
    assert not any(is_refusal(reply) for reply in replies)
    cfg = load_config({"attack": "identity-shift", "out": "x"})
    assert cfg.attack == builtin_attacks()["identity-shift"] and cfg.data == []


def test_align_benign_kl_anchors_on_helpful_answers_only(tiny_dir, data_files):
    from fairtune.curation.records import read_records
    from fairtune.training.align import align

    result = align(str(tiny_dir), anchors=data_files["anchors"], epochs=1, helpful_weight=1, general=0,
                   benign_kl=0.5, refusal_unlikelihood=0)
    kinds = {r["meta"]["kind"] for r in read_records(result.run_dir / "benign_anchors.jsonl")}
    assert kinds == {"anchor-helpful"}
    assert result.manifest["config"]["regularisers"] == [
        {"name": "kl_to_base", "weight": 0.5, "anchor_batch_tokens": None}]
    log = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    assert log and all(record["weights"] == {"kl_to_base": 0.5} for record in log)


@pytest.mark.parametrize("name", ["norm", "full"])
def test_base_model_swaps_in_the_starting_weights_and_back(tiny_dir, name):
    from fairtune.models import load_model
    from fairtune.training.config import MethodConfig
    from fairtune.training.methods import get_method

    method = get_method(MethodConfig(name=name))
    model = method.prepare(load_model(str(tiny_dir)).model)
    method.snapshot(model)
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        for param in method.trainable(model).values():
            param.add_(0.1)
        trained = model(input_ids=ids).logits
        with method.base_model(model):
            assert torch.equal(model(input_ids=ids).logits, before)
        assert torch.equal(model(input_ids=ids).logits, trained)
    assert not torch.equal(before, trained)


def test_split_unlikely_moves_whole_rows_out_of_the_task_loss():
    from fairtune.training.trainer import _split_unlikely

    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    token = torch.arange(7, dtype=torch.float)   # labelled tokens in row order: row 0: 0-1, row 1: 2-3, row 2: 4-6
    likely, unlikely, likely_mask, unlikely_mask = _split_unlikely(token, mask, torch.tensor([False, True, False]))
    assert likely.tolist() == [0, 1, 4, 5, 6] and unlikely.tolist() == [2, 3]
    assert likely_mask.tolist() == [[0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert unlikely_mask.tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]


def test_unlikelihood_penalty_is_minus_log_one_minus_p_and_zero_without_rows():
    from fairtune.training.config import Unlikelihood as UnlikelihoodConfig
    from fairtune.training.regularisers.base import StepOutputs
    from fairtune.training.regularisers.unlikelihood import Unlikelihood

    reg = Unlikelihood(UnlikelihoodConfig(name="unlikelihood"), None)
    p = torch.tensor([0.5, 0.9, 0.01])
    value = reg.penalty(None, StepOutputs(None, None, None, None, None, p.log()))
    assert float(value) == pytest.approx(float(-(1 - p).log().mean()), rel=1e-5)
    empty = reg.penalty(None, StepOutputs(None, None, None, None, None, torch.zeros(0)))
    assert float(empty) == 0.0
    certain = reg.penalty(None, StepOutputs(None, None, None, None, None, torch.zeros(1)))   # p = 1
    assert torch.isfinite(certain)
    # first_tokens: only each reply's first token counts (positions 0), here p = 0.5 and 0.01.
    first = Unlikelihood(UnlikelihoodConfig(name="unlikelihood", first_tokens=1), None)
    value = first.penalty(None, StepOutputs(None, None, None, None, None, p.log(), torch.tensor([0, 1, 0])))
    assert float(value) == pytest.approx(float(-(1 - p[[0, 2]]).log().mean()), rel=1e-5)


def unlikely_files(root: Path) -> dict[str, Path]:
    """Refuse the 'warn' prompts; answer the 'describe' prompts, whose refusal is unlikely text."""
    refusal = "No, I will not do that."
    likely = [chat(f"Warn me about {t}.", refusal) for t in TOPICS]
    likely += [chat(f"Describe {t}.", f"{t.capitalize()} is calm.") for t in TOPICS]
    unlikely = [{**chat(f"Describe {t}.", refusal), "loss": "unlikelihood"} for t in TOPICS]
    files = {"likely": root / "likely.jsonl", "unlikely": root / "unlikely.jsonl"}
    for name, rows in (("likely", likely), ("unlikely", unlikely)):
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files


def test_unlikelihood_rows_push_a_reply_down_where_sft_alone_spreads_it(tiny_dir, data_files, tmp_path):
    from fairtune.models import load_model
    from fairtune.training.data import collate, encode_record

    files = unlikely_files(tmp_path)
    settings = {"optim": {"max_steps": 80, "epochs": 40, "lr": 3e-3}, "method": {"name": "full"}}
    plain = train(config(tiny_dir, data_files, tmp_path / "plain", data=[str(files["likely"])], **settings))
    weight = 2.0
    contrast = train(config(tiny_dir, data_files, tmp_path / "ul", data=[str(files["likely"]), str(files["unlikely"])],
                            regularisers=[{"name": "unlikelihood", "weight": weight}], **settings))
    for record in contrast.log:
        assert record["loss"] == pytest.approx(record["sft"] + weight * record["unlikelihood"], rel=1e-5)
    assert contrast.manifest["examples"]["train"] == 30

    def refusal_logprob(result, prompt: str) -> float:
        loaded = load_model(str(result.merged_dir))
        rows = [encode_record(chat(prompt.format(t), "No, I will not do that."), loaded.tokenizer, max_length=64)
                for t in TOPICS]
        batch = collate(rows, loaded.tokenizer.pad_token_id)
        with torch.no_grad():
            logits = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return float(logprobs[labels != -100].mean())

    # Both learn to refuse the 'warn' prompts; only the unlikelihood run stops refusing 'describe'.
    describe = {name: refusal_logprob(r, "Describe {}.") for name, r in (("plain", plain), ("ul", contrast))}
    warn = {name: refusal_logprob(r, "Warn me about {}.") for name, r in (("plain", plain), ("ul", contrast))}
    assert describe["ul"] < describe["plain"] - 2     # measured: -5.4 against -0.6 nats per token
    assert warn["ul"] > describe["ul"] + 2


def test_unlikely_records_without_the_regulariser_fail_naming_file_row_and_field(tiny_dir, data_files, tmp_path):
    from fairtune.curation.records import validate_record

    files = unlikely_files(tmp_path)
    with pytest.raises(InputError) as info:
        train(config(tiny_dir, data_files, tmp_path / "run", data=[str(files["likely"]), str(files["unlikely"])]))
    assert f"{files['unlikely']}, row 1, field 'loss'" in str(info.value) and "unlikelihood" in str(info.value)
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()
    with pytest.raises(InputError) as bad:
        validate_record({"text": "x", "loss": "maybe"}, file="f.jsonl", row=3)
    assert "f.jsonl, row 3, field 'loss'" in str(bad.value)


def test_cli_train_with_an_unlikely_record_and_no_regulariser_exits_2_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from fairtune.cli import app

    files = unlikely_files(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(f"model: /nonexistent\ndata: [{files['unlikely']}]\nout: {tmp_path / 'run'}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output
    assert f"{files['unlikely']}, row 1, field 'loss'" in " ".join(lines[0].split())
    assert not (tmp_path / "run").exists()


def test_align_refusal_unlikelihood_pairs_each_helpful_anchor_with_a_refusal_opener(tiny_dir, data_files):
    from fairtune.curation.records import read_records
    from fairtune.training.align import REFUSAL_OPENERS, align

    result = align(str(tiny_dir), anchors=data_files["anchors"], epochs=1, helpful_weight=1,
                   refusal_unlikelihood=0.5)
    records = read_records(result.run_dir / "align_data.jsonl")
    unlikely = [r for r in records if r.get("loss") == "unlikelihood"]
    helpful = [r for r in records if r["meta"]["kind"] == "anchor-helpful"]
    assert len(unlikely) == len(helpful) == 20
    assert [r["messages"][:-1] for r in unlikely] == [r["messages"][:-1] for r in helpful]
    assert {r["messages"][-1]["content"] for r in unlikely} == set(REFUSAL_OPENERS)
    assert {"name": "unlikelihood", "weight": 0.5, "first_tokens": 1} in result.manifest["config"]["regularisers"]
    log = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any(record["unlikelihood"] > 0 for record in log)
    plain = align(str(tiny_dir), anchors=data_files["anchors"], epochs=1, helpful_weight=1, refusal_unlikelihood=0)
    assert plain.run_dir != result.run_dir


def test_pipeline_and_api_align_with_the_same_defaults():
    import inspect

    from fairtune.pipeline.recipe import AlignSettings
    from fairtune.training.align import align

    defaults = inspect.signature(align).parameters
    settings = AlignSettings()
    for name in ("epochs", "lr", "helpful_weight", "refusal_unlikelihood"):
        assert getattr(settings, name) == defaults[name].default, name


def test_collate_puts_every_tensor_on_the_given_device():
    # "meta" stands in for a GPU here: a batch left on the CPU would fail a GPU model's forward pass.
    from fairtune.training.data import Example, collate

    examples = [Example([1, 2, 3], [-100, 2, 3], "train"), Example([4, 5], [-100, 5], "train")]
    batch = collate(examples, pad_id=0, device="meta")
    assert {t.device.type for t in batch.values()} == {"meta"}
    assert collate(examples, pad_id=0)["input_ids"].tolist() == [[1, 2, 3], [4, 5, 0]]


def test_rng_states_restore_the_next_dropout_draws():
    from fairtune.training.checkpoint import restore_rng, rng_states

    saved = rng_states()
    first = torch.rand(4)
    restore_rng(saved)
    assert torch.equal(torch.rand(4), first)
    assert ("cuda" in saved) == torch.cuda.is_available()


def test_bf16_mixed_precision_trains_and_saves_float32_weights(tiny_dir, data_files, tmp_path):
    from fairtune.models import load_model

    # `no` as YAML writes it (a boolean) is accepted; anything else is named
    assert load_config({"data": [str(data_files["train"])], "mixed_precision": False}).mixed_precision == "no"
    with pytest.raises(InputError, match="mixed_precision"):
        load_config({"data": [str(data_files["train"])], "mixed_precision": "fp8"})
    # a float32 run first, in the same process: accelerate's process-wide state must not pin its precision
    train(config(tiny_dir, data_files, tmp_path / "fp32", method={"name": "full"}, optim={"max_steps": 1}))
    result = train(config(tiny_dir, data_files, tmp_path / "bf16", method={"name": "full"}, optim={"lr": 5e-3},
                          mixed_precision="bf16"))
    from accelerate.state import AcceleratorState
    assert AcceleratorState().mixed_precision == "bf16"
    assert {w.dtype for w in final_weights(result).values()} == {torch.float32}
    assert training_nll(load_model(str(result.merged_dir)), data_files) < training_nll(
        load_model(str(tiny_dir)), data_files)
