import numpy as np
import pytest

from fairtune.stats import bootstrap_mean, bootstrap_statistic


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


# -- bootstrap_statistic: any statistic of item indices ------------------------------------------

def test_statistic_is_seeded_and_replays_row_by_row_draws():
    values = np.random.default_rng(1).normal(size=50)
    seen = []

    def median(i):
        seen.append(i.copy())
        return float(np.median(values[i]))

    a = bootstrap_statistic(50, median, seed=7, n_resamples=500)
    assert bootstrap_statistic(50, lambda i: float(np.median(values[i])), seed=7, n_resamples=500) == a
    assert bootstrap_statistic(50, lambda i: float(np.median(values[i])), seed=8, n_resamples=500) != a
    assert a.value == float(np.median(values)) and a.n == 50 and a.ci_low < a.value < a.ci_high
    # The value is the statistic of all items in order; then one resample after another, the
    # same indices as a single (n_resamples, n) draw from default_rng(seed).
    np.testing.assert_array_equal(seen[0], np.arange(50))
    draws = np.random.default_rng(7).integers(0, 50, size=(500, 50))
    np.testing.assert_array_equal(np.stack(seen[1:]), draws)
    low, high = np.percentile([np.median(values[i]) for i in draws], [2.5, 97.5])
    assert (a.ci_low, a.ci_high) == (low, high)


def test_statistic_of_the_mean_matches_bootstrap_mean():
    values = np.random.default_rng(0).random(200)
    for seed in (0, 5):
        mean = bootstrap_mean(values, seed=seed)
        estimate = bootstrap_statistic(200, lambda i: values[i].mean(), seed=seed)
        assert estimate.value == mean.value and estimate.n == mean.n == 200
        assert (estimate.ci_low, estimate.ci_high) == pytest.approx((mean.ci_low, mean.ci_high), rel=1e-9)


def test_stratified_resamples_keep_each_stratum_and_its_size():
    strata = [1, 0, 1, 1, 2, 0, 1, 2, 2, 1]
    labels = np.array(strata)
    seen = []

    def record(i):
        seen.append(i.copy())
        return float(i.sum())

    estimate = bootstrap_statistic(10, record, seed=3, n_resamples=200, strata=strata)
    assert estimate.n == 10 and len(seen) == 201
    for index in seen[1:]:
        assert index.size == 10
        # Strata in sorted label order, each drawn only from its own items, its size kept.
        np.testing.assert_array_equal(labels[index], np.sort(labels))
    # Every item of a stratum is drawn somewhere over the resamples.
    assert set(np.concatenate(seen[1:])) == set(range(10))


def test_stratified_difference_of_means():
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1, 0], dtype=float)
    is_pro = np.array([True] * 4 + [False] * 6)

    def gap(i):
        return correct[i][is_pro[i]].mean() - correct[i][~is_pro[i]].mean()

    estimate = bootstrap_statistic(10, gap, seed=0, strata=is_pro)
    assert estimate.value == pytest.approx(3 / 4 - 2 / 6)
    assert -1 <= estimate.ci_low < estimate.value < estimate.ci_high <= 1
    # A stratum of one item has no spread to resample: no interval, as with n < 2.
    assert bootstrap_statistic(7, gap, seed=0, strata=is_pro[3:]).ci_low is None
    with pytest.raises(ValueError, match="3 labels for 10 items"):
        bootstrap_statistic(10, gap, seed=0, strata=[0, 1, 0])


def test_undefined_resamples_are_left_out_of_the_interval():
    values = np.arange(20, dtype=float)

    def picky(i):   # defined on the full sample (i[0] == 0) and on a third of the resamples
        if i[0] % 3 == 1:
            return None
        if i[0] % 3 == 2:
            return float("nan")
        return values[i].mean()

    estimate = bootstrap_statistic(20, picky, seed=2)
    assert estimate.value == values.mean()
    draws = np.random.default_rng(2).integers(0, 20, size=(2000, 20))
    kept = [values[i].mean() for i in draws if i[0] % 3 == 0]
    assert 0 < len(kept) < 2000
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx(tuple(np.percentile(kept, [2.5, 97.5])), rel=1e-12)
    # No resample defined: a value without an interval.
    none = bootstrap_statistic(20, lambda i: 1.0 if np.array_equal(i, np.arange(20)) else None, seed=0)
    assert (none.value, none.ci_low, none.ci_high, none.n) == (1.0, None, None, 20)


def test_statistic_degenerate_cases():
    def fail(i):
        raise AssertionError("not called for no items")

    assert bootstrap_statistic(0, fail, seed=0).as_dict() == {"value": None, "ci_low": None, "ci_high": None,
                                                             "n": 0, "confidence": 0.95}
    assert bootstrap_statistic(1, lambda i: 2.0, seed=0) == bootstrap_statistic(1, lambda i: 2.0, seed=1)
    one = bootstrap_statistic(1, lambda i: 2.0, seed=0)
    assert (one.value, one.ci_low, one.ci_high, one.n) == (2.0, None, None, 1)
    for undefined in (None, float("nan")):
        estimate = bootstrap_statistic(5, lambda i: undefined, seed=0)
        assert (estimate.value, estimate.ci_low, estimate.ci_high, estimate.n) == (None, None, None, 5)
    narrow = bootstrap_statistic(30, lambda i: float(i.size), seed=0, confidence=0.5)
    assert (narrow.value, narrow.ci_low, narrow.ci_high, narrow.confidence) == (30.0, 30.0, 30.0, 0.5)
