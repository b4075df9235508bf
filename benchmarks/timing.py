"""Timing helpers of the benchmarks (each run as a script, so this folder is first on the
import path)."""

import math
import statistics
import time


def timed(fn):
    """``(seconds, fn())``: the wall time of one call and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_interval(values, level: float = 0.95) -> tuple[float, float, float, float]:
    """The median of ``values``, a distribution-free interval for it and the interval's
    coverage: the k-th smallest and k-th largest value, k the largest with
    P(Binomial(n, 1/2) <= k - 1) <= (1 - level) / 2 (at least 1: few values cover less;
    n = 15 gives k = 4, coverage 0.965)."""
    x, n = sorted(values), len(values)
    k, below = 0, 0.0  # below: P(Binomial(n, 1/2) <= k - 1)
    while below + math.comb(n, k) / 2 ** n <= (1 - level) / 2:
        below += math.comb(n, k) / 2 ** n
        k += 1
    if k == 0:
        k, below = 1, 1 / 2 ** n
    return statistics.median(x), x[k - 1], x[n - k], 1 - 2 * below
