"""The statistics of repeats: a mean with its Student-t interval, and whether two sets of
repeats can be told apart (Welch's t-test, or a paired t-test when the same seeds ran).

Small on purpose: a report of a 3-seed sweep needs nothing more, and every number here can be
checked by hand against scipy.stats (tests/test_report.py does). The t distribution is
scipy.special's (`stdtr`, `stdtrit`), which Lightning's imports have already loaded:
importing scipy.stats for it took ~0.5 s of every sweep's report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """n values: their mean, sample std (ddof=1; NaN for one value) and the `level`
    confidence interval of the mean (NaN ends for one value: no spread was measured)."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_quantile(q: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    from scipy.special import stdtr

    return float(2 * stdtr(df, -abs(t)))


def mean_and_variance(xs: Sequence[float]) -> tuple[float, float]:
    mean = math.fsum(xs) / len(xs)
    return mean, math.fsum((x - mean) * (x - mean) for x in xs) / (len(xs) - 1)  # inf, not
    # OverflowError, for a diverged run's huge value


def interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of `values` and its Student-t confidence interval."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan, level)
    std = math.sqrt(mean_and_variance(xs)[1])
    half = t_quantile((1 + level) / 2, n - 1) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half, level)


def differ_p(a: Sequence[float], b: Sequence[float], paired: bool = False) -> float:
    """Two-sided p-value that the means of `a` and `b` differ: a paired t-test when the
    repeats pair up (same seeds, same order), else Welch's. NaN when it cannot be told
    (fewer than 2 values on a side); 1.0 when both sides have no spread and equal means, 0.0
    when they have no spread and different means."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) < 2 or len(b) < 2 or (paired and len(a) != len(b)):
        return math.nan
    diffs = [x - y for x, y in zip(a, b, strict=False)] if paired else []
    spread = (max(diffs) - min(diffs)) if paired else (max(a) - min(a)) + (max(b) - min(b))
    if spread == 0:
        same = (diffs[0] == 0) if paired else (a[0] == b[0])
        return 1.0 if same else 0.0
    if paired:  # scipy.stats.ttest_rel
        mean, variance = mean_and_variance(diffs)
        if variance == 0:
            return 0.0
        return two_sided_p(mean / math.sqrt(variance / len(diffs)), len(diffs) - 1)
    (mean_a, var_a), (mean_b, var_b) = mean_and_variance(a), mean_and_variance(b)
    share_a, share_b = var_a / len(a), var_b / len(b)  # scipy.stats.ttest_ind(equal_var=False)
    spread_of_shares = share_a * share_a / (len(a) - 1) + share_b * share_b / (len(b) - 1)
    if share_a + share_b == 0 or spread_of_shares == 0:  # variances that underflowed
        return math.nan
    df = (share_a + share_b) * (share_a + share_b) / spread_of_shares
    return two_sided_p((mean_a - mean_b) / math.sqrt(share_a + share_b), df)
