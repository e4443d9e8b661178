import math

import pytest
import torch

from fairtune.engine import ScoringEngine
from fairtune.errors import FairtuneError
from tiny_models import tiny_llama, tiny_tokenizer

TEXTS = [
    "The doctor said she would call back tomorrow morning.",
    "Hi.",
    "Numbers like 42 and 2024 appear in text too, and models must score them as well as words.",
    "The nurse and the teacher walked to the station together.",
    "A",
    "Fairness tests compare how a model treats similar prompts about different groups of people.",
    "She sells sea shells.",
]


def reference_logprobs(model, ids: list[int]) -> list[float]:
    """Independent computation: one sequence, full log-softmax, read off the next-token entries."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids))]


def test_text_scores_match_hand_computation_with_bos_prefix(tiny_loaded):
    engine = ScoringEngine.from_loaded(tiny_loaded)
    tok = tiny_loaded.tokenizer
    for text, scored in zip(TEXTS, engine.score_texts(TEXTS)):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        expected = reference_logprobs(tiny_loaded.model, [tok.bos_token_id, *ids])
        assert scored.token_ids == ids
        assert scored.token_logprobs == pytest.approx(expected, abs=1e-4)
        assert scored.total_logprob == pytest.approx(sum(expected), abs=1e-4)
        assert scored.mean_logprob == pytest.approx(sum(expected) / len(ids), abs=1e-5)


@pytest.mark.parametrize("budget", [16, 64, 200, 10_000])
def test_batched_equals_one_at_a_time(tiny_loaded, budget):
    single = [ScoringEngine.from_loaded(tiny_loaded).score_texts([t])[0] for t in TEXTS]
    engine = ScoringEngine.from_loaded(tiny_loaded, max_batch_tokens=budget)
    batched = engine.score_texts(TEXTS)
    for one, many in zip(single, batched):
        assert many.continuation == one.continuation and many.token_ids == one.token_ids
        assert max(abs(a - b) for a, b in zip(one.token_logprobs, many.token_logprobs)) < 1e-4
    assert engine.stats.sequences == len(TEXTS) and engine.stats.real_tokens <= engine.stats.padded_tokens


def test_batches_respect_the_token_budget_and_sort_by_length(tiny_loaded):
    engine = ScoringEngine.from_loaded(tiny_loaded, max_batch_tokens=64)
    items = [engine._encode(i, "", t) for i, t in enumerate(TEXTS * 3)]
    batches = engine._batches(items)
    for batch in batches:
        lengths = [len(item.input_ids) for item in batch]
        assert lengths == sorted(lengths, reverse=True)
        assert len(batch) == 1 or len(batch) * lengths[0] <= 64
    assert sorted(item.index for batch in batches for item in batch) == list(range(len(items)))


def test_continuations_use_joint_tokenisation_and_move_trailing_space(tiny_loaded):
    engine = ScoringEngine.from_loaded(tiny_loaded)
    tok = tiny_loaded.tokenizer
    [scored] = engine.score_continuations(["The doctor said "], ["she would call."])
    context_ids = tok("The doctor said", add_special_tokens=False)["input_ids"]
    whole = tok("The doctor said she would call.", add_special_tokens=False)["input_ids"]
    assert scored.token_ids == whole[len(context_ids):]
    expected = reference_logprobs(tiny_loaded.model, whole)[len(context_ids) - 1:]
    assert scored.token_logprobs == pytest.approx(expected, abs=1e-4)


def test_batched_continuations_equal_single(tiny_loaded):
    contexts = ["The nurse said", "Q: What is the capital of France?\nA:", "Hi"]
    conts = [" she was tired.", " Paris", " there, how are you today?"]
    engine = ScoringEngine.from_loaded(tiny_loaded, max_batch_tokens=4096)
    batched = engine.score_continuations(contexts, conts)
    for c, x, many in zip(contexts, conts, batched):
        [one] = ScoringEngine.from_loaded(tiny_loaded).score_continuations([c], [x])
        assert abs(one.total_logprob - many.total_logprob) < 1e-4


def test_prefix_falls_back_to_eos_without_bos():
    tok = tiny_tokenizer(with_bos=False)
    model = tiny_llama(len(tok))
    engine = ScoringEngine(model, tok)
    assert engine.prefix_token_id == tok.eos_token_id
    assert ScoringEngine(model, tiny_tokenizer(), prefix="eos").prefix_token_id == tok.eos_token_id
    with pytest.raises(FairtuneError, match="no bos token"):
        ScoringEngine(model, tok, prefix="bos")


def test_text_opening_with_prefix_token_does_not_score_it(tiny_loaded):
    engine = ScoringEngine.from_loaded(tiny_loaded)
    [plain] = engine.score_texts(["Hello there."])
    [opened] = engine.score_texts(["<|im_start|>Hello there."])
    assert opened.token_ids == plain.token_ids
    assert opened.total_logprob == pytest.approx(plain.total_logprob, abs=1e-5)


def test_empty_and_overlong_inputs_are_errors(tiny_loaded):
    engine = ScoringEngine.from_loaded(tiny_loaded)
    with pytest.raises(FairtuneError, match="empty"):
        engine.score_texts(["fine", ""])
    with pytest.raises(FairtuneError, match="window"):
        engine.score_texts(["word " * 400])


def test_bfloat16_scores_stay_close(tiny_dir):
    from fairtune.models import load_model

    exact = ScoringEngine.from_loaded(load_model(str(tiny_dir))).score_texts(TEXTS)
    fast = ScoringEngine.from_loaded(load_model(str(tiny_dir), dtype="bfloat16")).score_texts(TEXTS)
    for a, b in zip(exact, fast):
        assert math.isfinite(b.total_logprob)
        assert abs(a.mean_logprob - b.mean_logprob) < 0.1
