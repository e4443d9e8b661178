import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from fairtune.errors import ModelError
from fairtune.models import load_model, resolve_model_spec
from fairtune.models.cache import CONVERTED_MARKER, converted_gguf_dir
from fairtune.io import sha256_file


def test_embedded_spec_points_at_packaged_gguf():
    spec = resolve_model_spec("embedded")
    assert spec.kind == "embedded" and spec.is_gguf
    assert spec.path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and os.path.isfile(spec.path)


def test_spec_kinds(tiny_dir, tiny_gguf, tmp_path):
    gguf_path, _ = tiny_gguf
    assert resolve_model_spec(str(tiny_dir)).kind == "dir"
    assert resolve_model_spec(str(gguf_path)).kind == "gguf"
    assert resolve_model_spec(str(gguf_path.parent)).kind == "gguf"  # a folder holding one .gguf
    assert resolve_model_spec("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    assert resolve_model_spec("gpt2").kind == "hub"


@pytest.mark.parametrize("raw", ["./no/such/model", "/no/such/dir", "a/b/c", "missing.gguf", "not a model!", ""])
def test_unresolvable_specs_fail_with_one_line(raw):
    with pytest.raises(ModelError) as info:
        resolve_model_spec(raw)
    assert "\n" not in str(info.value)


def test_non_gguf_file_and_empty_dir_are_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .gguf file"):
        resolve_model_spec(str(tmp_path / "weights.bin"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_spec(str(tmp_path))


def test_load_local_dir_float32_and_bfloat16(tiny_dir):
    loaded = load_model(str(tiny_dir))
    assert loaded.model.dtype == torch.float32 and not loaded.model.training
    assert loaded.fingerprint == load_model(str(tiny_dir)).fingerprint and len(loaded.fingerprint) == 64
    assert load_model(str(tiny_dir), dtype="bf16").model.dtype == torch.bfloat16
    with pytest.raises(ModelError, match="unknown"):
        load_model(str(tiny_dir), dtype="float8")


def test_pickle_checkpoints_are_not_loaded(tmp_path, tiny_dir):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ModelError, match="does not unpickle"):
        load_model(str(tmp_path))


def test_gguf_converts_once_and_matches_reference(tiny_gguf, monkeypatch):
    gguf_path, reference = tiny_gguf
    loaded = load_model(str(gguf_path))
    assert loaded.fingerprint == sha256_file(gguf_path)
    cache_dir = converted_gguf_dir(gguf_path, loaded.fingerprint)
    assert (cache_dir / CONVERTED_MARKER).is_file() and (cache_dir / "model.safetensors").is_file()
    assert loaded.source == str(cache_dir)
    ids = loaded.tokenizer("The doctor said she would call.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, reference(ids).logits, atol=1e-5)
    assert loaded.tokenizer.bos_token == "<|im_start|>"

    def no_gguf_reads(*args, **kwargs):
        assert "gguf_file" not in kwargs, "the second load must read the safetensors cache"
        return original(*args, **kwargs)

    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_gguf_reads)
    assert load_model(str(gguf_path)).source == str(cache_dir)


def test_trust_remote_code_is_off_unless_asked(tiny_dir, monkeypatch):
    seen = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    load_model(str(tiny_dir))
    load_model(str(tiny_dir), trust_remote_code=True)
    assert seen == [False, True]


def test_hub_id_offline_fails_fast_with_a_pointer_to_local_copies():
    with pytest.raises(ModelError) as info:
        load_model("fairtune-test/not-in-cache")
    message = str(info.value)
    assert "\n" not in message and "--model DIR" in message


def test_unreachable_hub_is_detected_without_long_retries(monkeypatch):
    from fairtune.models import loader

    monkeypatch.delenv("HF_HUB_OFFLINE")
    probes = []
    monkeypatch.setattr(loader, "_hub_reachable", lambda: probes.append(1) or False)
    with pytest.raises(ModelError, match="hub cannot be reached"):
        load_model("fairtune-test/not-in-cache")
    assert probes == [1]
