"""The scoring and generation engines shared by every audit."""

from fairtune.engine.generation import GenerationEngine, Generation
from fairtune.engine.scoring import ScoredText, ScoringEngine, TokenDivergence

__all__ = ["Generation", "GenerationEngine", "ScoredText", "ScoringEngine", "TokenDivergence"]
