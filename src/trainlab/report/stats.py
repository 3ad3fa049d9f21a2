"""The statistics of repeats: a mean with its Student-t interval, and whether two sets of
repeats can be told apart (Welch's t-test, or a paired t-test when the same seeds ran).

Small on purpose: a report of a 3-seed sweep needs nothing more, and every number here can be
checked by hand against scipy.stats.
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


def interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of `values` and its Student-t confidence interval."""
    from scipy import stats

    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan, level)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half, level)


def differ_p(a: Sequence[float], b: Sequence[float], paired: bool = False) -> float:
    """Two-sided p-value that the means of `a` and `b` differ: a paired t-test when the
    repeats pair up (same seeds, same order), else Welch's. NaN when it cannot be told
    (fewer than 2 values on a side); 1.0 when both sides have no spread and equal means, 0.0
    when they have no spread and different means."""
    from scipy import stats

    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) < 2 or len(b) < 2 or (paired and len(a) != len(b)):
        return math.nan
    diffs = [x - y for x, y in zip(a, b, strict=False)] if paired else []
    spread = (max(diffs) - min(diffs)) if paired else (max(a) - min(a)) + (max(b) - min(b))
    if spread == 0:
        same = (diffs[0] == 0) if paired else (a[0] == b[0])
        return 1.0 if same else 0.0
    if paired:
        return float(stats.ttest_rel(a, b).pvalue)
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
