"""Statistics shared by every audit: estimates with seeded bootstrap intervals."""

from fairtune.stats.bootstrap import Estimate, bootstrap_mean

__all__ = ["Estimate", "bootstrap_mean"]
