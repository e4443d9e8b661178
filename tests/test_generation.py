from fairtune.engine import GenerationEngine

PROMPTS = ["What is the capital of France?", "Hi", "Tell me a long story about a fox and a dog in the woods.",
           "Is this sentence toxic or harmless?"]


def test_batched_greedy_equals_single(tiny_loaded):
    engine = GenerationEngine.from_loaded(tiny_loaded, batch_size=4, max_new_tokens=12)
    batched = engine.generate(PROMPTS)
    single = [GenerationEngine.from_loaded(tiny_loaded, batch_size=1, max_new_tokens=12).generate([p])[0]
              for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    for gen in batched:
        assert gen.finish_reason in ("stop", "length") and 0 <= gen.n_new_tokens <= 12
        assert gen.prompt_text.startswith("<|im_start|>user\n") and gen.prompt_text.endswith("<|im_start|>assistant\n")


def test_sampling_is_seeded(tiny_loaded):
    engine = GenerationEngine.from_loaded(tiny_loaded, batch_size=2, max_new_tokens=16)
    first = engine.generate(PROMPTS, do_sample=True, temperature=1.5, seed=3)
    again = engine.generate(PROMPTS, do_sample=True, temperature=1.5, seed=3)
    other = engine.generate(PROMPTS, do_sample=True, temperature=1.5, seed=4)
    assert [g.text for g in first] == [g.text for g in again]
    assert [g.text for g in first] != [g.text for g in other]


def test_system_prompt_and_message_lists(tiny_loaded):
    engine = GenerationEngine.from_loaded(tiny_loaded, max_new_tokens=4)
    [gen] = engine.generate(["Hi"], system="Be fair.")
    assert gen.messages[0] == {"role": "system", "content": "Be fair."}
    assert gen.prompt_text.startswith("<|im_start|>system\nBe fair.<|im_end|>")
    dialogue = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye"}]
    [gen] = engine.generate([dialogue])
    assert gen.prompt_text.count("<|im_start|>") == 4


def test_batches_respect_row_and_token_limits(tiny_loaded, monkeypatch):
    # rows x (longest prompt + budget) stays within max_batch_tokens, except a lone prompt that alone exceeds it
    engine = GenerationEngine.from_loaded(tiny_loaded, batch_size=3, max_new_tokens=5, max_batch_tokens=60)
    shapes = []
    generate = tiny_loaded.model.generate

    def recording(**kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return generate(**kwargs)

    monkeypatch.setattr(tiny_loaded.model, "generate", recording)
    prompts = PROMPTS + ["Hi again", "Yes?", "No.", "Why " * 40]
    replies = engine.generate(prompts)
    assert sum(rows for rows, _ in shapes) == len(prompts)
    assert all(rows <= 3 for rows, _ in shapes)
    assert all(rows * (width + 5) <= 60 for rows, width in shapes if rows > 1)
    assert any(rows == 1 and width + 5 > 60 for rows, width in shapes)      # the long prompt, alone
    single = GenerationEngine.from_loaded(tiny_loaded, batch_size=1, max_new_tokens=5).generate(prompts)
    assert [g.text for g in replies] == [g.text for g in single]
