"""connbench.report.stats is hand-written numpy (the report must not need scipy); these
tests hold it to scipy.stats where scipy is installed (the dev extra has it)."""

from __future__ import annotations

import numpy as np
import pytest

from connbench.report import stats

scipy_stats = pytest.importorskip("scipy.stats")

CASES = [
    ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]),            # 3 seeds against 3: smallest p 0.1
    ([1.0, 5.0, 2.0, 8.0], [3.0, 4.0, 9.0]),
    (list(np.linspace(0, 1, 12)), list(np.linspace(0.3, 1.3, 15))),
    ([1.0, 1.0, 2.0, 3.0, 3.0], [2.0, 3.0, 4.0, 4.0, 5.0, 5.0]),   # ties: normal approx.
    (list(np.random.default_rng(0).normal(size=30)),
     list(np.random.default_rng(1).normal(0.5, size=25))),          # n1*n2 > 400
]


@pytest.mark.parametrize("a,b", CASES)
def test_mann_whitney_matches_scipy(a, b):
    u, p = stats.mann_whitney(a, b)
    # the same method ours picks: exact for small samples without ties, else normal
    exact = len(a) * len(b) <= 400 and len(set(a) | set(b)) == len(a) + len(b)
    ref = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", use_continuity=True,
                                   method="exact" if exact else "asymptotic")
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-9)


def test_bootstrap_median_ci_brackets_the_median_like_scipy():
    x = list(np.random.default_rng(2).normal(size=9))
    ours = stats.bootstrap_median_ci(x)
    ref = scipy_stats.bootstrap((np.array(x),), np.median, confidence_level=0.95,
                                method="percentile", n_resamples=4000,
                                random_state=stats.BOOTSTRAP_SEED).confidence_interval
    assert ours.estimate == pytest.approx(float(np.median(x)))
    # different resampling streams: the bounds agree to within a resampling wobble
    assert ours.low == pytest.approx(ref.low, abs=0.25)
    assert ours.high == pytest.approx(ref.high, abs=0.25)
