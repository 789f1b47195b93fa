"""The verdict rules: small pure functions over per-seed values, so tests can pin them.

All comparisons are made on the *gain over chance* in the metric's good direction
(``sign * (value - chance)``, sign = +1 when higher is better), so one rule serves
accuracies, MSE and bits per character alike.

Thresholds (also printed in REPORT.md):

* FAIL_FRACTION = 0.25 — a structure *fails* a task when the whole 95 % bootstrap CI of
  its median recovers less than 25 % of full's median gain over chance; it does *not
  fail* when the whole CI is at or above 25 %.
* MATCH_MARGIN = 0.05 — a structure *matches* full (non-inferiority) when the lower end
  of the 95 % bootstrap CI of the difference of medians (structure − full, good
  direction) is above −5 % of full's gain over chance; it does *not match* when the
  upper end is below that margin. A structure better than full matches it.
* Both rules need full itself to have learned (the positive control): the lower end of
  full's CI must be above chance; otherwise the comparison is *uninformative*, shown as
  such and not counted in any verdict.
* Anything between the two sides of a rule is *inconclusive*; its reason says which way
  the point estimate leans and that more seeds would settle it.
* Arms combine unanimously; decided arms that disagree (some supported, some not) make
  the claim *mixed*: it holds in some settings and not in others, which is an answer,
  not a lack of one.
* MIN_SEEDS = 5 — an arm with fewer seeds on either side is *inconclusive* and the
  reason says what the point estimates alone lean to and how many seeds would settle it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from connbench.report.stats import (
    CI_LEVEL,
    Interval,
    bootstrap_diff_median_ci,
    bootstrap_median_ci,
    mann_whitney,
)

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
# full itself stayed at chance on this arm: the comparison says nothing about structure
UNINFORMATIVE = "uninformative"
# decided arms disagree: the claim holds in some settings (tasks, cells, budgets) only
MIXED = "mixed"

FAIL_FRACTION = 0.25
MATCH_MARGIN = 0.05
MIN_SEEDS = 5
FAR_FACTOR = 4.0  # "far fewer parameters": the other count is at least 4x larger


def settle(n: int) -> str:
    """An inconclusive comparison's last words: what run would settle it (a CI from
    twice the seeds is about 1/sqrt(2) as wide)."""
    return (f"rerun with more seeds (at least {max(2 * n, 2 * MIN_SEEDS)} per side) to "
            "narrow the CI and settle it")


@dataclass
class Comparison:
    """One structure against full on one arm (task, cell, hidden request)."""

    verdict: str
    reason: str
    x: Interval
    full: Interval
    diff: Interval = field(default_factory=lambda: Interval(math.nan, math.nan, math.nan))
    margin: float = math.nan
    fraction: Interval = field(default_factory=lambda: Interval(math.nan, math.nan, math.nan))
    p_value: float = math.nan
    n_x: int = 0
    n_full: int = 0


def _gain(values, chance: float, higher_is_better: bool) -> np.ndarray:
    sign = 1.0 if higher_is_better else -1.0
    base = 0.0 if math.isnan(chance) else chance
    return sign * (np.asarray(values, dtype=float) - base)


def _full_learned(full_gain_ci: Interval, chance: float) -> bool:
    if math.isnan(chance):
        return True  # no baseline known: nothing to check against
    return full_gain_ci.low > 0


def fails(x_values, full_values, chance: float, higher_is_better: bool) -> Comparison:
    """Does the structure fail the task (recover < FAIL_FRACTION of full's gain)?"""
    gx = _gain(x_values, chance, higher_is_better)
    gf = _gain(full_values, chance, higher_is_better)
    x_ci, f_ci = bootstrap_median_ci(gx), bootstrap_median_ci(gf)
    _, p = mann_whitney(gx, gf)
    out = Comparison(INCONCLUSIVE, "", x_ci, f_ci, p_value=p, n_x=len(gx), n_full=len(gf))
    if math.isnan(chance):
        out.reason = "the metric has no chance level"
        return out
    if not _full_learned(f_ci, chance):
        out.verdict, out.reason = UNINFORMATIVE, "full itself did not beat chance"
        return out
    scale = f_ci.estimate
    out.fraction = Interval(x_ci.estimate / scale, x_ci.low / scale, x_ci.high / scale)
    if out.fraction.high < FAIL_FRACTION:
        out.verdict, out.reason = SUPPORTED, f"whole CI below {FAIL_FRACTION:.0%} of full's gain"
    elif out.fraction.low >= FAIL_FRACTION:
        out.verdict = NOT_SUPPORTED
        out.reason = f"whole CI at or above {FAIL_FRACTION:.0%} of full's gain"
    else:
        lean = "fails" if out.fraction.estimate < FAIL_FRACTION else "does not fail"
        out.reason = (f"CI straddles {FAIL_FRACTION:.0%} of full's gain; the median "
                      f"({out.fraction.estimate:.0%}) leans to '{lean}'; "
                      f"{settle(min(len(gx), len(gf)))}")
    return _enough_seeds(out)


def matches(x_values, full_values, chance: float, higher_is_better: bool) -> Comparison:
    """Is the structure non-inferior to full within MATCH_MARGIN of full's gain?"""
    gx = _gain(x_values, chance, higher_is_better)
    gf = _gain(full_values, chance, higher_is_better)
    x_ci, f_ci = bootstrap_median_ci(gx), bootstrap_median_ci(gf)
    diff = bootstrap_diff_median_ci(gx, gf)
    _, p = mann_whitney(gx, gf)
    out = Comparison(INCONCLUSIVE, "", x_ci, f_ci, diff=diff, p_value=p, n_x=len(gx),
                     n_full=len(gf))
    if len(gx) == 0 or len(gf) == 0:
        out.reason = "no seeds"
        return out
    if not _full_learned(f_ci, chance):
        out.verdict, out.reason = UNINFORMATIVE, "full itself did not beat chance"
        return out
    out.margin = MATCH_MARGIN * abs(f_ci.estimate)
    if diff.low >= -out.margin:
        out.verdict, out.reason = SUPPORTED, "CI of the difference above −margin"
    elif diff.high < -out.margin:
        out.verdict, out.reason = NOT_SUPPORTED, "CI of the difference below −margin"
    else:
        lean = "matches" if diff.estimate >= -out.margin else "does not match"
        out.reason = (f"CI of the difference straddles −margin; the median leans to "
                      f"'{lean}'; {settle(min(len(gx), len(gf)))}")
    return _enough_seeds(out)


def _enough_seeds(out: Comparison) -> Comparison:
    """Demote a verdict drawn from fewer than MIN_SEEDS seeds to inconclusive, keeping
    its lean and saying what run would settle it."""
    n = min(out.n_x, out.n_full)
    if n < MIN_SEEDS and out.verdict != INCONCLUSIVE:
        seeds = "seed" if n == 1 else "seeds"
        out.reason = (f"{n} {seeds}: the point estimates alone say '{out.verdict}'; "
                      f"rerun the arm with at least {MIN_SEEDS} seeds to settle it")
        out.verdict = INCONCLUSIVE
    return out


def combine(verdicts) -> str:
    """One verdict from several arms: unanimous; *mixed* when decided arms disagree (or
    a part is already mixed); inconclusive when nothing was decided either way or there
    is nothing to combine. Uninformative arms (full at chance) count for nothing."""
    vs = [v for v in verdicts if v != UNINFORMATIVE]
    if vs and all(v == SUPPORTED for v in vs):
        return SUPPORTED
    if vs and all(v == NOT_SUPPORTED for v in vs):
        return NOT_SUPPORTED
    if MIXED in vs or (SUPPORTED in vs and NOT_SUPPORTED in vs):
        return MIXED
    return INCONCLUSIVE


def tally(verdicts) -> str:
    """How the arms behind a combined verdict went, e.g. "3 supported, 1 not supported,
    1 inconclusive" (empty for no arms)."""
    order = (SUPPORTED, NOT_SUPPORTED, MIXED, INCONCLUSIVE, UNINFORMATIVE)
    vs = list(verdicts)
    return ", ".join(f"{vs.count(v)} {v}" for v in order if vs.count(v))


# -- parameter counts (the "Recurrent Layers" notes) ------------------------------------
def rnn_params(inputs: int, hidden: int, outputs: int) -> int:
    """Elman RNN: (I·H) + (H·H + H) + (H·O + O); 28 for 4, 3, 1."""
    return inputs * hidden + (hidden * hidden + hidden) + (hidden * outputs + outputs)


def unrolled_dense_params(inputs: int, hidden: int, outputs: int, steps: int) -> int:
    """A dense network over the whole unrolled sequence: T·I inputs fully connected to
    T·H hidden units, then to O outputs: (T·I·T·H + T·H) + (T·H·O + O); 127 for 4, 3, 1
    over 3 steps."""
    ti, th = steps * inputs, steps * hidden
    return (ti * th + th) + (th * outputs + outputs)


def far_fewer(rnn: int, dense: int) -> str:
    """Exact counts leave nothing uncertain: at least FAR_FACTOR times, or not."""
    return SUPPORTED if dense >= FAR_FACTOR * rnn else NOT_SUPPORTED


def ci_text(ci: Interval) -> str:
    return ci.fmt(3) + f" ({int(CI_LEVEL * 100)} % CI)"
