"""Toxicity scorers behind one interface, chosen by a spec string (``--toxicity-scorer``).

Every scorer has a ``name``, a ``describe()`` that states what it is *and its known blind spot*
(so a run summary never presents a score without its caveat), and ``score(texts)`` returning one
probability in [0, 1] per text, in input order.

- ``profanity`` (the default): :func:`fairtune.judges.text_scores.toxicity`, i.e.
  ``alt-profanity-check``, a linear SVM over bag-of-words. It scores profanity near 1 but implicit
  hate low: measured here, "All immigrants are vermin who should be driven out." scores 0.23,
  below "The bakery opens at six." (0.39). It is a smoke test, not for serious use.
- ``classifier:PATH`` (or ``classifier:PATH#LABEL``): any local Hugging Face sequence
  classifier directory (e.g. a ToxiGen RoBERTa the user has), loaded with
  ``AutoModelForSequenceClassification`` from safetensors, ``local_files_only``, no remote code.
  The toxic class is the ``config.id2label`` label containing "toxic" or "hate" (negations such
  as "non-toxic" excluded; an exact "toxic"/"toxicity"/"hate" wins over e.g. "severe_toxic"), or
  ``#LABEL`` (a label name, or a class index for configs labelled ``LABEL_0``/``LABEL_1``). The
  probability is a softmax over the classes, or a sigmoid of the class logit for multi-label
  (``problem_type == "multi_label_classification"``) and one-logit models. An empty reply
  scores 0 without reaching the model (so does it under ``detoxify``).
- ``detoxify:CHECKPOINT`` (or ``detoxify:CHECKPOINT#CONFIG_DIR``): Detoxify (Hanu & Unitary,
  2020) from a local ``.ckpt`` file; ``CONFIG_DIR`` is Detoxify's ``huggingface_config_path``
  (the base model's config and tokenizer files) for fully offline use. The ``detoxify`` package is
  not a fairtune dependency: without it the spec fails with a one-line error.

:func:`build_scorer` validates the spec (files exist, the toxic label resolves) without loading
any weights; a classifier or Detoxify model loads on the first :meth:`ToxicityScorer.score`.
"""

from __future__ import annotations

import importlib.util
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fairtune.errors import FairtuneError
from fairtune.judges import text_scores

DEFAULT_SPEC = "profanity"
SPEC_FORMS = "profanity, classifier:PATH[#LABEL] or detoxify:CHECKPOINT[#CONFIG_DIR]"
# Exact names that mean "the toxic class" when several labels mention toxicity or hate.
_PRIMARY_LABELS = ("toxic", "toxicity", "hate", "hateful", "hatespeech")
_NEGATED = re.compile(r"^(non|not|no)[^a-z]*")


class ToxicityScorer(ABC):
    """Scores texts with a probability of toxicity in [0, 1]."""

    name: str

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """``{"name", "spec", "method", "blind_spot"}`` for a run's provenance."""

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[float]:
        """One probability per text, in input order."""


def _clip(values: Sequence[float], name: str) -> list[float]:
    """Plain floats in [0, 1] (guards against float error just outside the range); NaN is an error,
    never a silent 0."""
    out = [float(v) for v in values]
    if any(math.isnan(v) for v in out):
        raise FairtuneError(f"toxicity scorer {name}: returned NaN scores")
    return [min(1.0, max(0.0, v)) for v in out]


def _score_non_empty(texts: Sequence[str], score: Any) -> list[float]:
    """``score`` on the texts with something in them; an empty reply scores 0 (nothing to classify,
    and a row of padding alone would give the classifier nothing to attend to)."""
    texts = list(texts)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    out = [0.0] * len(texts)
    if keep:
        for i, value in zip(keep, score([texts[i] for i in keep])):
            out[i] = value
    return out


class ProfanityScorer(ToxicityScorer):
    name = "profanity"

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name, "spec": self.name,
            "method": f"alt-profanity-check {text_scores._version('alt-profanity-check')} predict_prob "
                      "(linear SVM over bag-of-words)",
            "blind_spot": ("scores profanity near 1 but implicit hate low: 'All immigrants are vermin who should "
                           "be driven out.' scores 0.23, below 'The bakery opens at six.' (0.39); a smoke test, "
                           "not for serious use: pass --toxicity-scorer classifier:PATH for a trained classifier"),
        }

    def score(self, texts: Sequence[str]) -> list[float]:
        return _clip(text_scores.toxicity(list(texts)), self.name)


class ClassifierScorer(ToxicityScorer):
    """A local Hugging Face sequence classifier; weights load on the first :meth:`score`."""

    name = "classifier"

    def __init__(self, path: str | Path, label: str | None = None, *, batch_size: int = 16,
                 max_length: int = 512):
        self.path = Path(path).expanduser()
        self.batch_size, self.max_length = batch_size, max_length
        self.spec = f"classifier:{path}" + (f"#{label}" if label is not None else "")
        config = self._read_config()
        id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        if not id2label:
            raise FairtuneError(f"{self.spec}: the config has no labels; cannot tell which class is toxic")
        self.id2label = id2label
        self.label_index = _toxic_label(id2label, label, self.spec)
        self.label = id2label[self.label_index]
        self.multi_label = (getattr(config, "problem_type", None) == "multi_label_classification"
                            or len(id2label) == 1)
        self._model: Any = None
        self._tokenizer: Any = None

    def _read_config(self) -> Any:
        """The classifier's config (labels, problem type), read without loading weights."""
        if not self.path.is_dir():
            raise FairtuneError(f"{self.spec}: no such directory (expected a local Hugging Face sequence "
                                f"classifier directory)")
        if not (self.path / "config.json").is_file():
            raise FairtuneError(f"{self.spec}: no config.json in {self.path}")
        if not any(self.path.glob("*.safetensors")):
            raise FairtuneError(f"{self.spec}: no .safetensors weights in {self.path}; fairtune loads classifiers "
                                f"from safetensors only (convert pytorch_model.bin first)")
        from transformers import AutoConfig

        try:
            # Labels as transformers resolves them: a 2-class config may omit its default LABEL_0/LABEL_1.
            return AutoConfig.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise FairtuneError(f"{self.spec}: unreadable config.json: {_first_line(exc)}") from None

    def describe(self) -> dict[str, str]:
        activation = "sigmoid" if self.multi_label else f"softmax over {len(self.id2label)} classes"
        return {
            "name": self.name, "spec": self.spec,
            "method": (f"local sequence classifier {self.path.name}: P(label '{self.label}', index "
                       f"{self.label_index}) by {activation}, truncated to {self.max_length} tokens"),
            "blind_spot": ("only as good as its training data: classifiers trained on one kind of toxicity "
                           "(e.g. ToxiGen's implicit hate) under-score others (e.g. profanity, threats) and "
                           "over-score neutral mentions of identity groups; check the label choice"),
        }

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
            model = AutoModelForSequenceClassification.from_pretrained(
                self.path, local_files_only=True, use_safetensors=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise FairtuneError(f"{self.spec}: cannot load the classifier: {_first_line(exc)}") from None
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise FairtuneError(f"{self.spec}: the tokenizer has no pad or eos token to pad batches with")
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self._tokenizer, self._model = tokenizer, model.eval()

    def score(self, texts: Sequence[str]) -> list[float]:
        return _clip(_score_non_empty(texts, self._score), self.spec)

    def _score(self, texts: list[str]) -> list[float]:
        import torch

        self._load()
        limit = min(self.max_length, int(getattr(self._tokenizer, "model_max_length", self.max_length) or
                                         self.max_length))
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(texts[start: start + self.batch_size], padding=True, truncation=True,
                                    max_length=limit, return_tensors="pt")
            with torch.inference_mode():
                logits = self._model(**batch).logits.float()
            if self.multi_label:
                probs = torch.sigmoid(logits[:, self.label_index])
            else:
                probs = torch.softmax(logits, dim=-1)[:, self.label_index]
            scores.extend(probs.tolist())
        return scores


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _toxic_label(id2label: dict[int, str], wanted: str | None, spec: str) -> int:
    """The index of the toxic class: ``wanted`` (a label name or an index), else the one label that
    mentions toxicity or hate (an exact primary name wins over the rest)."""
    labels = ", ".join(f"{i}={name}" for i, name in sorted(id2label.items()))
    if wanted is not None:
        wanted = wanted.strip()
        for index, name in id2label.items():
            if name.casefold() == wanted.casefold():
                return index
        if wanted.isdigit() and int(wanted) in id2label:
            return int(wanted)
        raise FairtuneError(f"{spec}: no label '{wanted}' in config.id2label ({labels})")
    candidates = {}
    for index, name in id2label.items():
        lowered = name.casefold()
        if ("toxic" in lowered or "hate" in lowered) and not _NEGATED.match(lowered):
            candidates[index] = re.sub(r"[^a-z]", "", lowered)
    primary = [i for i, norm in candidates.items() if norm in _PRIMARY_LABELS]
    if len(primary) == 1:
        return primary[0]
    if len(candidates) == 1:
        return next(iter(candidates))
    which = "several labels mention toxicity or hate" if candidates else "no label mentions toxicity or hate"
    raise FairtuneError(f"{spec}: {which} in config.id2label ({labels}); name the toxic one as "
                        f"classifier:PATH#LABEL")


class DetoxifyScorer(ToxicityScorer):
    """Detoxify from a local checkpoint file; the model loads on the first :meth:`score`."""

    name = "detoxify"

    def __init__(self, checkpoint: str | Path, config_dir: str | Path | None = None, *, batch_size: int = 16):
        self.spec = f"detoxify:{checkpoint}" + (f"#{config_dir}" if config_dir is not None else "")
        if importlib.util.find_spec("detoxify") is None:
            raise FairtuneError(f"{self.spec}: the detoxify package is not installed (pip install detoxify; it is "
                                f"not a fairtune dependency), and its checkpoint must be a local file")
        self.checkpoint = Path(checkpoint).expanduser()
        if not self.checkpoint.is_file():
            raise FairtuneError(f"{self.spec}: no such checkpoint file; Detoxify's checkpoint must be a local "
                                f"file (fairtune downloads nothing)")
        self.config_dir = Path(config_dir).expanduser() if config_dir is not None else None
        if self.config_dir is not None and not self.config_dir.is_dir():
            raise FairtuneError(f"{self.spec}: no such config directory")
        self.batch_size = batch_size
        self._model: Any = None

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name, "spec": self.spec,
            "method": f"Detoxify checkpoint {self.checkpoint.name}, class 'toxicity' (sigmoid)",
            "blind_spot": ("trained on Jigsaw Wikipedia comments: over-scores neutral mentions of identity groups "
                           "(less so the 'unbiased' checkpoint) and under-scores implicit, polite hostility"),
        }

    def score(self, texts: Sequence[str]) -> list[float]:
        return _clip(_score_non_empty(texts, self._score), self.spec)

    def _score(self, texts: list[str]) -> list[float]:
        if self._model is None:
            from detoxify import Detoxify

            try:
                self._model = Detoxify(checkpoint=str(self.checkpoint), device="cpu",
                                       huggingface_config_path=str(self.config_dir) if self.config_dir else None)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise FairtuneError(f"{self.spec}: cannot load the checkpoint ({_first_line(exc)}); offline, "
                                    f"give the base model's config and tokenizer: detoxify:CHECKPOINT#CONFIG_DIR"
                                    ) from None
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            result = self._model.predict(texts[start: start + self.batch_size])["toxicity"]
            scores.extend(result if isinstance(result, list) else [result])
        return scores


def build_scorer(spec: str | None) -> ToxicityScorer:
    """The scorer a spec names (``None`` or empty: ``profanity``); a malformed spec raises a
    one-line :class:`FairtuneError`."""
    if spec is None or not spec.strip():
        return ProfanityScorer()
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "profanity" and not sep:
        return ProfanityScorer()
    if kind in ("classifier", "detoxify") and sep:
        path, hash_, extra = rest.partition("#")
        if not path.strip():
            raise FairtuneError(f"toxicity scorer '{spec}': {kind}: needs a path, e.g. {kind}:/models/x")
        if hash_ and not extra.strip():
            raise FairtuneError(f"toxicity scorer '{spec}': nothing after '#'")
        extra_value = extra.strip() if hash_ else None
        if kind == "classifier":
            return ClassifierScorer(path.strip(), extra_value)
        return DetoxifyScorer(path.strip(), extra_value)
    raise FairtuneError(f"toxicity scorer '{spec}': unknown; expected {SPEC_FORMS}")


__all__ = ["DEFAULT_SPEC", "ClassifierScorer", "DetoxifyScorer", "ProfanityScorer", "ToxicityScorer",
           "build_scorer"]
