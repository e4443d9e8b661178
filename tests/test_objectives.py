"""Fairness objectives on a tiny random model: each term is zero where the pair or word line is
identical and positive where it differs, its gradients reach only what trains, gradient reversal
defeats a probe, an adaptive weight can drive an objective, bad configs fail in one line, and a
run with objectives resumes to the same weights."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fairtune.errors import InputError
from fairtune.training import load_config, train
from fairtune.training.data import encode_record
from fairtune.training.objectives import OBJECTIVES, ObjectiveContext
from fairtune.training.objectives.counterfactual_pairing import CounterfactualPairing, aligned_positions
from fairtune.training.trainer import Interrupted

OCCUPATIONS = ["welder", "florist", "surveyor", "baker", "pilot", "tailor", "clerk", "miner", "editor", "judge"]


def pair_rows(n: int = 20) -> list[dict]:
    rows = []
    for i in range(n):
        occupation, g = OCCUPATIONS[i % len(OCCUPATIONS)], f"g{i}"
        for value, word in (("female", "she"), ("male", "he")):
            rows.append({"id": f"{g}-{value}", "text": f"The {occupation} said {word} would finish the job today.",
                         "meta": {"group": g, "attributes": {"gender": value}}})
    return rows


def context_rows(n: int = 20) -> list[dict]:
    return [{"id": f"c{i}", "text": f"After the shift the {OCCUPATIONS[i % len(OCCUPATIONS)]} mentioned that",
             "loss": "none", "meta": {"kind": "context", "axis": "gender",
                                      "association": {"gender": "female" if i % 2 else "male"}}}
            for i in range(n)]


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows() + context_rows()))
    return path


def base_config(tiny_dir, data: Path, out: Path, **overrides) -> dict:
    raw = {"model": str(tiny_dir), "data": [str(data)], "out": str(out), "method": {"name": "lora", "rank": 4},
           "optim": {"lr": 5e-3, "batch_tokens": 256, "max_steps": 3, "max_length": 64}}
    raw.update(overrides)
    return raw


def objective(name: str, tokenizer, **settings):
    from fairtune.training.config import TrainConfig

    config = TrainConfig.model_validate({"data": ["x.jsonl"], "objectives": [{"name": name, **settings}]}).objectives[0]
    return OBJECTIVES[name](config, ObjectiveContext(tokenizer, tokenizer.pad_token_id, 0, "objectives.0"))


def encode(rows: list[dict], tokenizer) -> list:
    return [encode_record(r, tokenizer, max_length=64) for r in rows]


def lora(tiny_loaded):
    from fairtune.training.config import MethodConfig
    from fairtune.training.methods import get_method

    import copy

    return get_method(MethodConfig(name="lora", rank=4)).prepare(copy.deepcopy(tiny_loaded.model)).train()


def step_outputs(model, examples: list, pad_id: int) -> SimpleNamespace:
    from fairtune.training.data import collate

    batch = collate(examples, pad_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return SimpleNamespace(train_logits=logits, train_input_ids=batch["input_ids"], train_mask=batch["attention_mask"],
                           train_indices=list(range(len(examples))), position=0)


def only_trainable_grads(model) -> None:
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad, "the term sent no gradient anywhere"
    assert all(p.requires_grad for n, p in model.named_parameters() if n in with_grad)
    assert all("lora_" in n for n in with_grad), sorted(with_grad)[:3]


def test_aligned_positions_cover_only_what_follows_the_swap():
    a, b = [1, 2, 3, 9, 4, 5], [1, 2, 3, 7, 8, 4, 5]
    pa, pb = aligned_positions(a, b)
    # logits at the swapped word's last token predict 4, then 4 predicts 5
    assert (pa, pb) == ([3, 4], [4, 5])
    assert [a[p + 1] for p in pa] == [b[p + 1] for p in pb]
    assert aligned_positions(a, a) == ([], [])


def test_counterfactual_pairing_is_zero_on_identical_members_and_positive_otherwise(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    rows = pair_rows(2)
    same = [dict(rows[0]), {**rows[0], "id": "twin", "meta": {"group": "g0", "attributes": {"gender": "male"}}}]
    pairing = objective("counterfactual_pairing", tokenizer, loglik_gap=0.5)
    model = lora(tiny_loaded)
    for examples, positive in ((encode(same, tokenizer), False), (encode(rows[:2], tokenizer), True)):
        pairing.setup(model, examples, [], [], [])
        assert list(pairing.pairs) == [(0, 1)]
        model.zero_grad()
        term = pairing.penalty(model, step_outputs(model, examples, tokenizer.pad_token_id))
        if positive:
            assert term > 0 and pairing.last["divergence"] > 0
            term.backward()
            only_trainable_grads(model)
        else:
            assert float(term.detach()) == pytest.approx(0.0, abs=1e-6)


def test_centred_loglik_gap_keeps_a_shared_offset_and_penalises_what_the_context_adds():
    fm = ("female", "male")
    # the same offset read from pairs stored in either order: nothing left to penalise
    same = CounterfactualPairing._centred(torch.tensor([2.0, -2.0, 2.0]), [(1.0, fm), (-1.0, fm), (1.0, fm)])
    assert torch.allclose(same, torch.zeros(3))
    # one pair leans further than the others: only its excess (and the mean's shift) remains
    lean = CounterfactualPairing._centred(torch.tensor([2.0, 1.0]), [(1.0, fm), (1.0, fm)])
    assert torch.allclose(lean, torch.tensor([0.5, -0.5]))
    # a pair whose two values no other pair in the batch shares is compared with nothing
    alone = CounterfactualPairing._centred(torch.tensor([3.0, 1.0, 1.0]),
                                           [(1.0, ("female", "neutral")), (1.0, fm), (1.0, fm)])
    assert torch.allclose(alone, torch.zeros(3))


def test_swap_offset_target_learns_each_swaps_offset_and_penalises_only_the_contexts_share(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    pairing = objective("counterfactual_pairing", tokenizer, loglik_gap=1.0, loglik_gap_target="swap_offset")
    pairing.setup(None, [], [], [], [])
    fm = ("female", "male")
    she, her = (fm, (((1,), (2,)),)), (fm, (((3,), (4,)),))
    # first sight of a swap: compared with its batch mean; the means are remembered per swap
    first = pairing._from_offsets(torch.tensor([2.0, 4.0, -1.0]), [(1.0, she), (1.0, she), (-1.0, her)], True)
    assert torch.allclose(first, torch.tensor([-1.0, 1.0, 0.0]))
    assert pairing.offsets == {she: (3.0, 1), her: (1.0, 1)}
    # later batches: each gap against its own swap's running offset, not the other swap's
    later = pairing._from_offsets(torch.tensor([3.0, 1.0]), [(1.0, she), (1.0, her)], False)
    assert torch.allclose(later, torch.zeros(2))
    assert pairing.offsets == {she: (3.0, 1), her: (1.0, 1)}       # measuring learns nothing


def test_swap_offset_keys_pairs_by_their_swapped_tokens(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    examples = encode(pair_rows(4), tokenizer)
    pairing = objective("counterfactual_pairing", tokenizer, loglik_gap=1.0, loglik_gap_target="swap_offset")
    pairing.setup(None, examples, [], [], [])
    # every pair swaps she for he, in whichever order its rows came: one key, female side first
    keys = {key for _, key in pairing.directions.values()}
    assert len(keys) == 1
    (values, swapped), = keys
    female = tokenizer.decode([t for a, _ in swapped for t in a])
    male = tokenizer.decode([t for _, b in swapped for t in b])
    assert values == ("female", "male") and "she" in female and "she" not in male and "he" in male


def test_centred_pairing_term_is_smaller_than_the_zero_target_on_a_shared_offset(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    examples = encode(pair_rows(6), tokenizer)
    model = lora(tiny_loaded)
    terms = {}
    for target in ("zero", "batch_mean"):
        pairing = objective("counterfactual_pairing", tokenizer, loglik_gap=1.0, loglik_gap_target=target)
        pairing.setup(model, examples, [], [], [])
        with torch.no_grad():
            terms[target] = float(pairing.penalty(model, step_outputs(model, examples, tokenizer.pad_token_id)))
    # the centred gaps are the zero-target gaps minus their mean: never a larger sum of squares
    assert terms["batch_mean"] < terms["zero"]


def test_counterfactual_pairing_pairs_partners_into_one_batch_and_only_across_values(tiny_loaded):
    from fairtune.training.data import plan_batches

    tokenizer = tiny_loaded.tokenizer
    rows = pair_rows(12) + [{"id": "solo", "text": "A sentence with no partner at all.", "meta": {"group": "solo"}}]
    rows.append({**rows[0], "id": "g0-female-2", "text": rows[0]["text"].replace("job", "work")})  # same value
    examples = encode(rows, tokenizer)
    pairing = objective("counterfactual_pairing", tokenizer)
    pairing.setup(None, examples, [], [], [])
    assert (0, len(rows) - 1) not in pairing.pairs and len(pairing.pairs) == 12 + 1   # g0 has one more male partner
    batches = plan_batches(examples, batch_tokens=64, seed=0, epoch=0, units=pairing.units(examples))
    where = {i: b for b, batch in enumerate(batches) for i in batch}
    assert all(where[i] == where[j] for i, j in pairing.pairs)


def test_attribute_equalisation_is_zero_for_identical_words_and_positive_otherwise(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    contexts = encode(context_rows(4), tokenizer)
    model = lora(tiny_loaded)
    for pairs, positive in (([["river", "river"]], False), ([["she", "he"], ["mother", "father"]], True)):
        words = Path(__import__("tempfile").mkdtemp()) / "words.tsv"
        words.write_text("a\tb\n" + "".join("\t".join(p) + "\n" for p in pairs))
        equalise = objective("attribute_equalisation", tokenizer, words=str(words), contexts_per_step=4)
        equalise.setup(model, [], contexts, [], [])
        model.zero_grad()
        term = equalise.penalty(model, SimpleNamespace(position=0))
        if positive:
            assert term > 0
            term.backward()
            only_trainable_grads(model)
        else:
            assert float(term.detach()) == pytest.approx(0.0, abs=1e-6)


def test_attribute_equalisation_scores_a_word_of_several_tokens_as_the_sum_over_its_tokens(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    contexts = encode(context_rows(2), tokenizer)
    equalise = objective("attribute_equalisation", tokenizer, pairs=[["she", "grandmother"]])
    equalise.setup(tiny_loaded.model, [], contexts, [], [])
    with torch.no_grad():
        table = equalise.word_logprobs(tiny_loaded.model, [contexts[0].input_ids])
        word = tokenizer(" grandmother", add_special_tokens=False)["input_ids"]
        assert len(word) > 1
        ids = torch.tensor([contexts[0].input_ids + word])
        logp = torch.log_softmax(tiny_loaded.model(input_ids=ids).logits[0].float(), -1)
        start = len(contexts[0].input_ids)
        expected = sum(float(logp[start - 1 + k, t]) for k, t in enumerate(word))
    assert float(table[0, -1, 1]) == pytest.approx(expected, abs=1e-4)


class ToyEncoder(torch.nn.Module):
    """Token embeddings in which token 5 and token 6 differ along one direction: the attribute is
    linearly readable from the pooled state until the encoder learns to hide it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(16, 8)
        with torch.no_grad():
            self.embed.weight[5] += 3.0
            self.embed.weight[6] -= 3.0
        self.config = SimpleNamespace(hidden_size=8)

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        hidden = self.embed(input_ids)
        return SimpleNamespace(hidden_states=(hidden,), logits=None)


def probe_accuracy_after_training(reverse: bool) -> float:
    from fairtune.training.data import Example

    generator = torch.Generator().manual_seed(1)
    contexts = []
    for i in range(64):
        value = i % 2
        noise = torch.randint(7, 16, (3,), generator=generator).tolist()
        contexts.append(Example([0, 5 + value, *noise], [-100] * 5, "context",
                                association={"gender": "male" if value else "female"}))
    adversary = objective("adversarial", SimpleNamespace(pad_token_id=0), layer=0, contexts_per_step=32,
                          probe_lr=0.05)
    encoder = ToyEncoder()
    adversary.setup(encoder, [], contexts[:48], [], contexts[48:])
    params = [{"params": encoder.parameters(), "lr": 0.05 if reverse else 0.0}, adversary.param_group()]
    optimizer = torch.optim.Adam(params)
    accuracy = []
    for step in range(300):
        optimizer.zero_grad()
        adversary.penalty(encoder, SimpleNamespace(position=step)).backward()
        optimizer.step()
        if step >= 150 and step % 10 == 0:
            accuracy.append(adversary.measure(encoder))
    return sum(accuracy) / len(accuracy)


def test_gradient_reversal_lowers_the_probe_accuracy_on_a_linearly_encoded_attribute():
    # held-out accuracy of the adversary's probe, averaged over the second half of training
    assert probe_accuracy_after_training(reverse=False) > 0.95    # the probe alone reads it
    assert probe_accuracy_after_training(reverse=True) < 0.70     # the encoder, reversed, hides it


def test_adversarial_gradients_reach_only_the_adapters_and_the_probe(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    model = lora(tiny_loaded)
    adversary = objective("adversarial", tokenizer, layer=-1, contexts_per_step=8)
    adversary.setup(model, [], encode(context_rows(8), tokenizer), [], [])
    probe_only = torch.optim.Adam(adversary.parameters(), lr=0.05)
    for _ in range(50):   # the model is pushed only while the probe beats chance: train the probe first
        model.zero_grad()
        probe_only.zero_grad()
        adversary.penalty(model, SimpleNamespace(position=0)).backward()
        if adversary.last["reversed"]:
            break
        probe_only.step()
    assert adversary.last["reversed"] == 1.0
    only_trainable_grads(model)
    assert all(p.grad is not None for p in adversary.parameters())
    assert 0 <= adversary.last["probe_accuracy"] <= 1


def test_training_logs_each_objective_with_its_weight_and_an_adaptive_weight_can_drive_one(tiny_dir, pair_file,
                                                                                          tmp_path):
    raw = base_config(tiny_dir, pair_file, tmp_path / "run", objectives=[
        {"name": "counterfactual_pairing", "weight": 0.5, "loglik_gap": 0.1, "held_out": 3},
        {"name": "attribute_equalisation", "weight": 0.01, "contexts_per_step": 4},
        {"name": "adversarial", "weight": 0.1, "contexts_per_step": 4, "held_out": 3}],
        regularisers=[{"name": "kl_to_base", "weight": 0.2},
                      {"name": "adaptive", "target": "counterfactual_pairing", "constraint": "held_out",
                       "budget": 0.0, "step_size": 10.0}])
    result = train(load_config(raw))
    for record in result.log:
        for name in ("counterfactual_pairing", "attribute_equalisation", "adversarial", "kl_to_base"):
            assert name in record and name in record["weights"]
        assert 0 <= record["adversarial.probe_accuracy"] <= 1
    weights = [r["weights"]["counterfactual_pairing"] for r in result.log]
    measured = [r["adaptive"]["counterfactual_pairing"]["last_measured"] for r in result.log]
    assert all(m > 0 for m in measured) and weights == sorted(weights) and weights[-1] > 0.5   # over budget: rises
    assert set(result.manifest["objectives"]) == {"counterfactual_pairing", "attribute_equalisation", "adversarial"}


@pytest.mark.parametrize("objectives, rows, field, text", [
    ([{"name": "counterfactual_pairing"}], context_rows(4), "objectives.0", "no counterfactual pairs"),
    ([{"name": "attribute_equalisation"}], pair_rows(4), "objectives.0", "no neutral contexts"),
    ([{"name": "adversarial"}], pair_rows(4), "objectives.0", "no neutral contexts labelled"),
    ([{"name": "adversarial", "layer": 9}], pair_rows(2) + context_rows(4), "objectives.0.layer", "out of range"),
    ([{"name": "attribute_equalisation", "pairs": []}], context_rows(4), "objectives.0.attribute_equalisation.pairs",
     "empty word list"),
    ([{"name": "counterfactual_pairing", "axis": "height"}], pair_rows(2), "objectives.0.counterfactual_pairing.axis",
     "Input should be"),
])
def test_bad_objective_configs_fail_in_one_line_naming_the_field(tiny_dir, tmp_path, objectives, rows, field, text):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        train(load_config(base_config(tiny_dir, data, out, objectives=objectives)))
    message = str(info.value)
    assert f"field '{field}'" in message and text in message and "\n" not in message
    assert not out.exists()


def test_an_empty_word_file_fails_before_the_model_loads(tiny_dir, pair_file, tmp_path):
    words = tmp_path / "words.tsv"
    words.write_text("# nothing but a comment\n")
    with pytest.raises(InputError, match="empty word list") as info:
        train(load_config(base_config(tiny_dir, pair_file, tmp_path / "out",
                                      objectives=[{"name": "attribute_equalisation", "words": str(words)}])))
    assert str(words) in str(info.value) and not (tmp_path / "out").exists()


def test_an_interrupted_run_with_objectives_resumes_to_the_same_weights_and_probe(tiny_dir, pair_file, tmp_path):
    objectives = [{"name": "counterfactual_pairing", "loglik_gap": 0.1},
                  {"name": "adversarial", "contexts_per_step": 4}]
    raw = lambda out: base_config(tiny_dir, pair_file, out, objectives=objectives,  # noqa: E731
                                  optim={"lr": 5e-3, "batch_tokens": 256, "max_steps": 5, "epochs": 3},
                                  method={"name": "lora", "rank": 4, "dropout": 0.2})
    whole = train(load_config(raw(tmp_path / "whole")))

    def interrupt(record):
        if record["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(load_config(raw(tmp_path / "cut")), on_step=interrupt)
    resumed = train(load_config(raw(tmp_path / "cut")))
    assert [r["adversarial.probe_accuracy"] for r in resumed.log] == [r["adversarial.probe_accuracy"] for r in whole.log]
    assert resumed.manifest["objectives"] == whole.manifest["objectives"]
    from safetensors.torch import load_file

    for f in whole.merged_dir.glob("*.safetensors"):
        other = load_file(str(resumed.merged_dir / f.name))
        for name, tensor in load_file(str(f)).items():
            assert torch.equal(tensor, other[name]), name
