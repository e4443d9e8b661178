from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tiny-model helpers beside the tests

from tiny_gguf import write_tiny_llama_gguf  # noqa: E402
from tiny_models import save_tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """The test session gets its own fairtune cache, and never talks to the hub."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRTUNE_CACHE", str(tmp_path_factory.mktemp("fairtune-cache")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf"
    reference = write_tiny_llama_gguf(path)
    return path, reference


@pytest.fixture(scope="session")
def tiny_loaded(tiny_dir):
    from fairtune.models import load_model

    return load_model(str(tiny_dir))


def write_csv(path: Path, rows: list[list[str]], header=("id", "sent_more", "sent_less", "stereo_antistereo",
                                                          "bias_type")) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def pairs_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "pairs.csv", [
        ["p1", "The nurse said she was tired.", "The nurse said he was tired.", "stereo", "gender"],
        ["p2", "The engineer fixed the bridge.", "The teacher fixed the bridge.", "stereo", "gender"],
        ["p3", "The old man forgot his keys.", "The young man forgot his keys.", "stereo", "age"],
        ["p4", "She sells sea shells by the shore.", "He sells sea shells by the shore.", "antistereo", "gender"],
        ["p5", "The doctor will call back tomorrow.", "The nurse will call back tomorrow.", "stereo", "age"],
    ])


def assert_input_error(suite: str, path: Path, row, field, text: str) -> None:
    """Loading ``path`` into ``suite`` fails with one line that names the file, row and field."""
    from fairtune.audits import AuditOptions, get_audit
    from fairtune.errors import InputError

    with pytest.raises(InputError) as info:
        get_audit(suite).load(path, AuditOptions())
    assert (info.value.row, info.value.field) == (row, field)
    message = str(info.value)
    assert message.startswith(str(path)) and text in message and "\n" not in message
