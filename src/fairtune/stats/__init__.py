"""Statistics shared by every audit: estimates with seeded bootstrap intervals."""

from fairtune.stats.bootstrap import (Estimate, bootstrap_mean, bootstrap_statistic, intervals_wanted, pearson_rows,
                                      point_estimates)

__all__ = ["Estimate", "bootstrap_mean", "bootstrap_statistic", "intervals_wanted", "pearson_rows", "point_estimates"]
