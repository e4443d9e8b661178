"""Judges: scorers of generated text, shared by the generative audits.

- ``text_scores``: the cheap offline ones (sentiment, profanity probability, a refusal prefix rule,
  length);
- ``refusal``: layered refusal judges (prefix, keyword, triage of empty/degenerate replies, kappa);
- ``model_judges``: model-graded refusal judges (local LM, local classifier, endpoint);
- ``toxicity``: pluggable toxicity scorers (profanity by default, a local classifier, Detoxify).
"""

# ``toxicity`` is the submodule of pluggable toxicity scorers; the profanity probability
# function stays reachable as ``text_scores.toxicity``.
from fairtune.judges.text_scores import TextScores, describe, is_refusal, score_texts, sentiment, word_count

__all__ = ["TextScores", "describe", "is_refusal", "score_texts", "sentiment", "word_count"]
