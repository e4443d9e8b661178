"""ScoringEngine.kl_from: per-token KL(reference || audited) on shared batches."""

import math
from types import SimpleNamespace

import pytest
import torch

from fairtune.engine import ScoringEngine
from fairtune.errors import FairtuneError
from tiny_models import tiny_llama, tiny_tokenizer

CONTEXTS = ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "The doctor said ",
            "Q: What is the capital of France?\nA:", ""]
CONTINUATIONS = ["Hello there, how are you today?", "she would call back tomorrow.", " Paris",
                 "Numbers like 42 appear in text too."]


@pytest.fixture(scope="module")
def other_model(tiny_loaded):
    return tiny_llama(len(tiny_loaded.tokenizer), seed=1)


def independent_kl(ref_model, own_model, ids: list[int], n_scored: int) -> tuple[list[float], list[bool]]:
    """One sequence at a time, float64 softmax of each model, read off the last n_scored positions."""
    with torch.no_grad():
        ref = torch.log_softmax(ref_model(torch.tensor([ids])).logits[0].double(), dim=-1)
        own = torch.log_softmax(own_model(torch.tensor([ids])).logits[0].double(), dim=-1)
    positions = range(len(ids) - n_scored - 1, len(ids) - 1)
    kl = [float((ref[p].exp() * (ref[p] - own[p])).sum()) for p in positions]
    same = [bool(ref[p].argmax() == own[p].argmax()) for p in positions]
    return kl, same


def test_kl_matches_an_independent_computation(tiny_loaded, other_model):
    tok = tiny_loaded.tokenizer
    audited, reference = ScoringEngine(other_model, tok), ScoringEngine.from_loaded(tiny_loaded)
    result = audited.kl_from(reference, CONTEXTS, CONTINUATIONS)
    assert audited.stats.sequences == reference.stats.sequences == len(CONTEXTS)  # both models ran
    assert audited.stats.real_tokens == reference.stats.real_tokens > 0
    scored = ScoringEngine(other_model, tok).score_continuations(CONTEXTS, CONTINUATIONS)
    for i, (divergence, score) in enumerate(zip(result, scored)):
        assert divergence.token_ids == score.token_ids  # the same tokens as likelihood scoring
        ids = audited._encode(i, CONTEXTS[i], CONTINUATIONS[i]).input_ids
        kl, same = independent_kl(tiny_loaded.model, other_model, ids, len(score.token_ids))
        assert divergence.kl == pytest.approx(kl, rel=1e-3, abs=1e-6)
        assert divergence.same_argmax == same
        assert min(divergence.kl) > 0  # two different random models disagree everywhere a little


class FixedModel(torch.nn.Module):
    """Predicts the same hand-written distribution at every position."""

    def __init__(self, probs: list[float]):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=len(probs), max_position_embeddings=256)
        self.row = torch.log(torch.tensor(probs))

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, -1))


def test_kl_of_hand_made_distributions_and_its_direction():
    tok = tiny_tokenizer()
    ref = ScoringEngine(FixedModel([0.7, 0.2, 0.1]), tok)
    own = ScoringEngine(FixedModel([0.2, 0.6, 0.2]), tok)
    expected = 0.7 * math.log(0.7 / 0.2) + 0.2 * math.log(0.2 / 0.6) + 0.1 * math.log(0.1 / 0.2)   # 0.588
    reverse = 0.2 * math.log(0.2 / 0.7) + 0.6 * math.log(0.6 / 0.2) + 0.2 * math.log(0.2 / 0.1)    # 0.547
    [forward] = own.kl_from(ref, ["Hi"], [" there, friend"])
    [backward] = ref.kl_from(own, ["Hi"], [" there, friend"])
    assert len(forward.kl) == len(forward.token_ids) > 1
    assert forward.kl == pytest.approx([expected] * len(forward.kl), abs=1e-6)
    assert backward.kl == pytest.approx([reverse] * len(backward.kl), abs=1e-6)
    assert forward.same_argmax == [False] * len(forward.kl)  # argmax 0 against argmax 1
    [same] = ref.kl_from(ScoringEngine(FixedModel([0.7, 0.2, 0.1]), tok), ["Hi"], [" there"])
    assert same.kl == [0.0] * len(same.kl) and all(same.same_argmax)


def test_kl_is_zero_against_the_same_weights(tiny_loaded, tiny_dir):
    from fairtune.models import load_model

    copy = load_model(str(tiny_dir))
    engine = ScoringEngine.from_loaded(tiny_loaded)
    for reference in (engine, ScoringEngine.from_loaded(copy)):
        for divergence in engine.kl_from(reference, CONTEXTS, CONTINUATIONS):
            assert max(divergence.kl) == 0.0 and all(divergence.same_argmax)


def test_bfloat16_copy_drifts_a_little(tiny_loaded, tiny_dir):
    from fairtune.models import load_model

    fast = ScoringEngine.from_loaded(load_model(str(tiny_dir), dtype="bfloat16"))
    kl = [v for d in fast.kl_from(ScoringEngine.from_loaded(tiny_loaded), CONTEXTS, CONTINUATIONS) for v in d.kl]
    assert 0 < sum(kl) / len(kl) < 0.01


@pytest.mark.parametrize("budget", [16, 64, 4096])
def test_batched_equals_one_at_a_time(tiny_loaded, other_model, budget):
    tok = tiny_loaded.tokenizer
    reference = ScoringEngine.from_loaded(tiny_loaded)
    batched = ScoringEngine(other_model, tok, max_batch_tokens=budget).kl_from(reference, CONTEXTS, CONTINUATIONS)
    for c, x, many in zip(CONTEXTS, CONTINUATIONS, batched):
        [one] = ScoringEngine(other_model, tok).kl_from(reference, [c], [x])
        assert many.token_ids == one.token_ids and many.same_argmax == one.same_argmax
        assert max(abs(a - b) for a, b in zip(one.kl, many.kl)) < 1e-5


def test_models_must_share_a_tokenizer(tiny_loaded):
    tok = tiny_loaded.tokenizer
    engine = ScoringEngine.from_loaded(tiny_loaded)
    assert engine.kl_from(ScoringEngine.from_loaded(tiny_loaded), [], []) == []  # compatible: checks only
    wider = ScoringEngine(tiny_llama(len(tok) + 8), tok)
    with pytest.raises(FairtuneError, match="output tokens"):
        engine.kl_from(wider, ["Hi"], [" there"])
    renamed = tiny_tokenizer()
    renamed.add_tokens(["<|extra|>"])
    with pytest.raises(FairtuneError, match="vocabulary differs"):
        engine.kl_from(ScoringEngine(tiny_loaded.model, renamed), [], [])
    with pytest.raises(ValueError, match="differ in length"):
        engine.kl_from(engine, ["a"], [])
