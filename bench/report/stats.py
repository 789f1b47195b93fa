"""Small-sample statistics for the report, in numpy only (no scipy).

Every resampling uses a fixed seed so that a rerun of the report gives the same
numbers, and every function takes plain sequences of floats (one value per seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SEED = 20190528  # fixed: the report must be byte-identical across reruns
N_BOOT = 4000
CI_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval."""

    estimate: float
    low: float
    high: float

    def fmt(self, digits: int = 3) -> str:
        if math.isnan(self.estimate):
            return "n/a"
        return f"{self.estimate:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan)


def _clean(values) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    return arr[np.isfinite(arr)]


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_median_ci(values, level: float = CI_LEVEL, n_boot: int = N_BOOT) -> Interval:
    """Median over seeds with a percentile-bootstrap CI.

    With 3 seeds the interval is close to [min, max]: the seeds themselves are drawn
    beside it in the figures so that nobody over-reads it.
    """
    x = _clean(values)
    if x.size == 0:
        return NAN_INTERVAL
    if x.size == 1:
        return Interval(float(x[0]), float(x[0]), float(x[0]))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    boot = np.median(rng.choice(x, size=(n_boot, x.size), replace=True), axis=1)
    return Interval(float(np.median(x)), *_percentiles(boot, level))


def bootstrap_diff_median_ci(a, b, level: float = CI_LEVEL, n_boot: int = N_BOOT) -> Interval:
    """median(a) - median(b) with a percentile-bootstrap CI, the groups resampled
    independently (seeds of two structures are independent runs)."""
    xa, xb = _clean(a), _clean(b)
    if xa.size == 0 or xb.size == 0:
        return NAN_INTERVAL
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    ba = np.median(rng.choice(xa, size=(n_boot, xa.size), replace=True), axis=1)
    bb = np.median(rng.choice(xb, size=(n_boot, xb.size), replace=True), axis=1)
    est = float(np.median(xa) - np.median(xb))
    return Interval(est, *_percentiles(ba - bb, level))


def _u_statistic(xa: np.ndarray, xb: np.ndarray) -> float:
    """Mann–Whitney U of a against b; ties count one half."""
    greater = (xa[:, None] > xb[None, :]).sum()
    ties = (xa[:, None] == xb[None, :]).sum()
    return float(greater + 0.5 * ties)


def _exact_u_counts(n1: int, n2: int) -> np.ndarray:
    """Number of rank arrangements giving each U = 0..n1*n2 (no ties).

    The classic recurrence f(n1, n2, u) = f(n1-1, n2, u-n2) + f(n1, n2-1, u).
    """
    table = {}

    def count(i: int, j: int) -> np.ndarray:
        if (i, j) in table:
            return table[(i, j)]
        if i == 0 or j == 0:
            out = np.zeros(i * j + 1)
            out[0] = 1.0
        else:
            out = np.zeros(i * j + 1)
            out[j:] += count(i - 1, j)[: i * j + 1 - j]
            out[: (i * (j - 1)) + 1] += count(i, j - 1)
        table[(i, j)] = out
        return out

    return count(n1, n2)


def mann_whitney(a, b) -> tuple[float, float]:
    """Two-sided Mann–Whitney U test of a against b: (U, p).

    Exact distribution for small samples without ties (the usual case: a handful of
    seeds), normal approximation with tie correction otherwise. Note that with 3
    seeds against 3 the smallest possible two-sided p is 0.1.
    """
    xa, xb = _clean(a), _clean(b)
    n1, n2 = xa.size, xb.size
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    u = _u_statistic(xa, xb)
    pooled = np.concatenate([xa, xb])
    has_ties = np.unique(pooled).size < pooled.size
    if n1 * n2 <= 400 and not has_ties:
        counts = _exact_u_counts(n1, n2)
        probs = counts / counts.sum()
        k = int(round(min(u, n1 * n2 - u)))
        p = min(1.0, 2.0 * float(probs[: k + 1].sum()))
        return u, p
    mean = n1 * n2 / 2.0
    _, tie_counts = np.unique(pooled, return_counts=True)
    n = n1 + n2
    tie_term = float(((tie_counts**3) - tie_counts).sum()) / (n * (n - 1))
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return u, 1.0
    z = (abs(u - mean) - 0.5) / math.sqrt(var)
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return u, min(1.0, p)
