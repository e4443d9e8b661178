"""Judges: small, offline scorers of generated text, shared by the generative audits.

``text_scores`` holds the cheap ones (sentiment, profanity/toxicity probability, a rule-based
refusal detector, length). Better judges (issue 4: a trained toxicity scorer, a model-graded
refusal classifier) will be layered on top with the same shape: a function from texts to scores.
"""

from fairtune.judges.text_scores import (TextScores, describe, is_refusal, score_texts, sentiment,
                                         toxicity, word_count)

__all__ = ["TextScores", "describe", "is_refusal", "score_texts", "sentiment", "toxicity", "word_count"]
