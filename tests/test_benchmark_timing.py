"""The benchmarks' median interval against scipy's binomial distribution."""

import importlib.util
from pathlib import Path

import pytest
from scipy import stats

spec = importlib.util.spec_from_file_location(
    "timing", Path(__file__).resolve().parents[1] / "benchmarks" / "timing.py")
timing = importlib.util.module_from_spec(spec)
spec.loader.exec_module(timing)


@pytest.mark.parametrize("n", [3, 5, 6, 9, 15, 30])
def test_median_interval_takes_the_order_statistics_of_the_binomial_tails(n):
    values = [10.0 * i for i in range(n, 0, -1)]  # unsorted on purpose
    mid, lo, hi, coverage = timing.median_interval(values)
    # k: the largest k >= 1 with P(B <= k - 1) <= 0.025, B ~ Binomial(n, 1/2)
    k = max([1, *[j for j in range(1, n // 2 + 1) if stats.binom.cdf(j - 1, n, 0.5) <= 0.025]])
    assert (lo, hi) == (10.0 * k, 10.0 * (n - k + 1))
    assert coverage == pytest.approx(1 - 2 * stats.binom.cdf(k - 1, n, 0.5))
    assert mid == pytest.approx(10.0 * (n + 1) / 2)
