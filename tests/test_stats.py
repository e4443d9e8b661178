import numpy as np
import pytest

from fairtune.stats import bootstrap_mean


def test_same_seed_same_interval_other_seed_other_interval():
    values = np.random.default_rng(0).random(200)
    a, b, c = (bootstrap_mean(values, seed=s) for s in (7, 7, 8))
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low < a.value < a.ci_high and a.n == 200


def test_binary_rate_interval_matches_normal_approximation():
    values = [1] * 60 + [0] * 40
    est = bootstrap_mean(values, seed=0)
    assert est.value == pytest.approx(0.6)
    half_width = 1.96 * (0.6 * 0.4 / 100) ** 0.5  # 0.096
    assert est.ci_low == pytest.approx(0.6 - half_width, abs=0.02)
    assert est.ci_high == pytest.approx(0.6 + half_width, abs=0.02)


def test_degenerate_samples():
    assert bootstrap_mean([], seed=0).as_dict() == {"value": None, "ci_low": None, "ci_high": None, "n": 0,
                                                     "confidence": 0.95}
    one = bootstrap_mean([1.0], seed=0)
    assert (one.value, one.ci_low, one.ci_high, one.n) == (1.0, None, None, 1)
    constant = bootstrap_mean([True] * 5, seed=0)
    assert (constant.value, constant.ci_low, constant.ci_high) == (1.0, 1.0, 1.0)
