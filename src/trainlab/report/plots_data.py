"""The numbers the report's plots draw, kept apart from the drawing so that tests can check
them against hand-computed ones instead of pixels.

Repeats are jobs whose overrides differ only in `seed`: one configuration trained with several
seeds. A plot shows their mean, with a 95% Student-t interval (`stats.interval`) as its
uncertainty; one seed alone measures no spread, so it gets no band. Only completed repeats
have a value: a diverged or failed one's objective is a placeholder for the sweepers and a
pruned one's is partial, so they are left out of the mean and marked on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from trainlab.report.files import write_atomic
from trainlab.report.stats import Interval, differ_p, interval

SEED_KEYS = ("seed",)
TIE_P = 0.05  # p >= this against the best: the data cannot tell the two apart
BAD = ("diverged", "failed")


def direction_of(df) -> str:
    """The records' direction (maximize only where no record says)."""
    if "direction" in df and df["direction"].notna().any():
        return str(df["direction"].dropna().iloc[0])
    return "maximize"


def objective_of(df) -> str | None:
    """The records' optimized metric (e.g. val/auroc_best), None where no record says."""
    if "optimized_metric" in df and df["optimized_metric"].notna().any():
        return str(df["optimized_metric"].dropna().iloc[0])
    return None


def swept_keys(df) -> list[str]:
    """The overridden keys that took more than one value in this sweep."""
    keys = []
    for override in df["overrides"]:
        for part in str(override).split():
            key = part.partition("=")[0].lstrip("+~")
            if key not in keys and key in df and df[key].astype(str).nunique() > 1:
                keys.append(key)
    return keys


def save_png(fig, path: Path, rect: tuple | None = None) -> Path:
    """`rect`: the part of the figure tight_layout fits the axes in (room for a footnote)."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def config_of(overrides) -> str:
    """A job's configuration: its overrides without the seed, in a fixed order."""
    parts = str(overrides).split()
    return " ".join(sorted(p for p in parts if p.partition("=")[0].lstrip("+~") not in SEED_KEYS))


@dataclass(frozen=True)
class Repeats:
    """The jobs of one configuration. `values`: the completed repeats' objectives, in seed
    order; `seeds`: their seeds, or None when the jobs have none to pair by."""

    config: str
    jobs: tuple[str, ...]
    values: tuple[float, ...]
    seeds: tuple | None
    bad: int  # diverged or failed repeats
    stats: Interval | None  # None: no repeat completed


def repeats(df) -> dict[str, Repeats]:
    """Every configuration's repeats, by config_of(overrides)."""
    out = {}
    for config, group in df.groupby(df["overrides"].map(config_of), sort=False):
        done = group[group["status"] == "completed"].dropna(subset=["objective"])
        seeds = None
        if "seed" in done and done["seed"].notna().all():
            done = done.sort_values("seed", kind="stable")
            seeds = tuple(done["seed"])
            seeds = seeds if len(set(seeds)) == len(seeds) else None
        values = tuple(float(v) for v in done["objective"])
        out[config] = Repeats(
            config,
            tuple(str(j) for j in done["job"]),
            values,
            seeds,
            int(group["status"].isin(BAD).sum()),
            interval(values) if values else None,
        )
    return out


def ranked(reps, direction: str) -> list[Repeats]:
    """The configurations with a completed repeat, best mean first."""
    sign = -1.0 if direction == "maximize" else 1.0
    done = [r for r in reps if r.stats is not None]
    return sorted(done, key=lambda r: sign * r.stats.mean)


def tie_p(a: Repeats, b: Repeats) -> float:
    """p that a and b differ: paired when both ran the same seeds, else Welch's."""
    paired = a.seeds is not None and a.seeds == b.seeds
    return differ_p(a.values, b.values, paired=paired)


def tied(a: Repeats, best: Repeats) -> bool:
    return a is best or tie_p(a, best) >= TIE_P  # NaN (too few repeats): not tied


class CurvePoint(NamedTuple):
    lr: float
    mean: float
    low: float  # NaN: one repeat, no interval
    high: float
    n: int


def series_keys(df) -> list[str]:
    return [k for k in ("optimizer", "batch_size") if k in df and df[k].nunique() > 1]


def series_name(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True)) or "all jobs"


def by_series(df):
    """(series name, its jobs) per optimizer (and batch size) when swept."""
    keys = series_keys(df)
    if not keys:
        yield "all jobs", df
        return
    for values, group in df.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        yield series_name(keys, values), group


def lr_curves(df) -> dict[str, list[CurvePoint]]:
    """Per optimizer (and batch size, when swept): the mean objective of each lr with its
    95% interval and n completed repeats, lr ascending. Where other swept settings put more
    than one configuration at one lr, the best mean is drawn."""
    direction = direction_of(df)
    out = {}
    for name, group in by_series(df.dropna(subset=["lr"])):
        points = []
        for lr, at in group.groupby("lr", sort=True):
            best = ranked(repeats(at).values(), direction)
            if best:
                s = best[0].stats
                points.append(CurvePoint(float(lr), s.mean, s.low, s.high, s.n))
        if points:
            out[name] = points
    return out


def lr_marks(df) -> dict[str, list[float]]:
    """The lrs of the jobs without a value, by what happened: they are drawn as marks."""
    out = {}
    for what, statuses in (("diverged or failed", BAD), ("pruned", ("pruned",))):
        lrs = df.loc[df["status"].isin(statuses), "lr"].dropna()
        if len(lrs):
            out[what] = sorted(float(v) for v in lrs)
    return out


def has_repeats(df) -> bool:
    return any(r.stats is not None and r.stats.n > 1 for r in repeats(df).values())


class Cell(NamedTuple):
    mean: float
    n: int
    tied: bool  # with the best cell: p >= TIE_P (the best cell itself too)
    best: bool
    bad: int  # diverged or failed repeats of the configuration shown


def heatmap_cells(df) -> dict[tuple[float, float], Cell]:
    """(lr, batch size) -> the cell of the lr x batch size grid: the mean over the repeats of
    the best configuration there (over the other swept settings), and whether it is tied
    with the best cell's configuration."""
    direction = direction_of(df)
    df = df.dropna(subset=["lr", "batch_size"])
    best_at = {}
    for (lr, bs), at in df.groupby(["lr", "batch_size"], sort=True):
        best = ranked(repeats(at).values(), direction)
        if best:
            best_at[(float(lr), bs)] = best[0]
    if not best_at:
        return {}
    top = ranked(best_at.values(), direction)[0]
    return {
        cell: Cell(r.stats.mean, r.stats.n, tied(r, top), r is top, r.bad)
        for cell, r in best_at.items()
    }


class EpochPoint(NamedTuple):
    epoch: int
    mean: float
    low: float  # the lowest of the repeats at this epoch
    high: float
    n: int


def epoch_band(curves, metric: str) -> list[EpochPoint]:
    """Per epoch over the repeats' logged curves (DataFrames with `epoch` and `metric`): the
    mean, the min and the max of the last value each logged that epoch."""
    import pandas as pd

    per_job = [
        c.dropna(subset=[metric]).groupby("epoch")[metric].last() for c in curves if metric in c
    ]
    if not per_job:
        return []
    table = pd.concat(per_job, axis=1)
    return [
        EpochPoint(int(e), float(v.mean()), float(v.min()), float(v.max()), int(v.count()))
        for e, v in table.iterrows()
        if v.count() and not math.isnan(v.mean())
    ]
