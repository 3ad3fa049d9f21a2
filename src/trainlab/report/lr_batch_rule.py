"""The lr scaling rule a sweep measured: how the best lr moves with the batch size.

linear (lr x batch) and sqrt (lr x sqrt(batch)) are rules of thumb; a sweep over lr and
batch_size can say which, if either, this model and data follow. For each batch size the best
lr is estimated from the mean objective per lr (a quadratic in log10(lr) through the best
point and its neighbours, whose vertex is taken when it is a peak of the right kind inside the
swept lrs; else the best swept lr, flagged), then

    log lr* = log c + alpha x log batch_size

is fitted by least squares. alpha's interval comes from a bootstrap over repeats (the seeds of
each (lr, batch_size) cell resampled with replacement, the whole estimate redone); with one
repeat per cell there is nothing to resample, and the least-squares standard error gives it.
The result says whether linear (alpha = 1) and sqrt (alpha = 0.5) lie inside the interval and
which `lr_scaling=power` command trains with the measured rule (plan.py applies it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas

from trainlab.report.stats import t_quantile

MIN_BATCH_SIZES = 3  # a line through 2 points has no residual to judge it by
MIN_LRS = 3  # a peak needs a point on each side
RESAMPLES = 1000
SEED = 0  # the bootstrap's numpy Generator: the same sweep gives the same interval
LEVEL = 0.95
RULES = {"linear": 1.0, "sqrt": 0.5}
PNG = "lr_batch_rule.png"


def _cells(jobs: pandas.DataFrame) -> dict[float, dict[float, np.ndarray]] | None:
    """{batch_size: {lr: objectives of its repeats}} of the completed jobs, keeping only batch
    sizes with MIN_LRS distinct lrs; None when fewer than MIN_BATCH_SIZES are left."""
    needed = {"lr", "batch_size", "objective", "status"}
    if not needed <= set(jobs.columns):
        return None
    done = jobs[jobs["status"] == "completed"]
    numbers = {k: pandas.to_numeric(done[k], errors="coerce") for k in ("lr", "batch_size")}
    objective = pandas.to_numeric(done["objective"], errors="coerce")
    table = pandas.DataFrame({**numbers, "objective": objective}).replace([np.inf, -np.inf], np.nan)
    table = table.dropna()
    table = table[(table["lr"] > 0) & (table["batch_size"] > 0)]
    cells: dict[float, dict[float, np.ndarray]] = {}
    for size, rows in table.groupby("batch_size"):
        by_lr = {float(lr): g["objective"].to_numpy(float) for lr, g in rows.groupby("lr")}
        if len(by_lr) >= MIN_LRS:
            cells[float(size)] = dict(sorted(by_lr.items()))
    return cells if len(cells) >= MIN_BATCH_SIZES else None


def best_lr(lrs: np.ndarray, means: np.ndarray, direction: str) -> tuple[float, str | None]:
    """The best lr of one batch size and why it is flagged (None: a fitted peak inside)."""
    sign = 1.0 if direction == "maximize" else -1.0
    x = np.log10(lrs)
    best = int(np.argmax(sign * means))
    if best in (0, len(x) - 1):
        return float(lrs[best]), "best at the edge of the swept lrs"
    near = slice(max(0, best - 2), min(len(x), best + 3))  # 3 to 5 points
    a, b, _ = np.polyfit(x[near], means[near], 2)
    if not sign * a < 0:  # a maximum opens downward, a minimum upward
        return float(lrs[best]), "no peak of the objective around the best lr"
    vertex = -b / (2 * a)
    if not x[0] <= vertex <= x[-1]:
        return float(lrs[best]), "fitted peak outside the swept lrs"
    return float(10**vertex), None


def _best_lrs(means: dict[float, dict[float, float]], direction: str) -> dict[float, tuple]:
    return {
        size: best_lr(np.array(list(m)), np.array(list(m.values())), direction)
        for size, m in means.items()
    }


def _fit(sizes: np.ndarray, lrs: np.ndarray) -> tuple[float, float, float]:
    """alpha, log c and alpha's standard error of log lr = log c + alpha log size."""
    x, y = np.log(sizes), np.log(lrs)
    alpha, log_c = np.polyfit(x, y, 1)
    dof = len(x) - 2
    residual = y - (log_c + alpha * x)
    spread = float(np.sum((x - x.mean()) ** 2))
    se = math.sqrt(float(residual @ residual) / dof / spread) if dof > 0 and spread else math.nan
    return float(alpha), float(log_c), se


def _bootstrap(cells, direction: str) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """alpha and each batch size's best lr over RESAMPLES resamples of each cell's repeats."""
    rng = np.random.default_rng(SEED)
    sizes = np.array(list(cells))
    alphas, per_size = [], {s: [] for s in cells}
    for _ in range(RESAMPLES):
        means = {
            s: {lr: float(rng.choice(v, size=len(v)).mean()) for lr, v in by_lr.items()}
            for s, by_lr in cells.items()
        }
        found = _best_lrs(means, direction)
        lrs = np.array([found[s][0] for s in sizes])
        for s in sizes:
            per_size[s].append(found[s][0])
        alphas.append(_fit(sizes, lrs)[0])
    return np.array(alphas), {s: np.array(v) for s, v in per_size.items()}


def _key(size: float) -> int | float:
    return int(size) if float(size).is_integer() else size


def _anchor(sizes: np.ndarray, flags: dict[float, str | None]) -> float:
    """The batch size `use` is stated at: the swept one nearest the middle (in log) whose
    best lr was not flagged, else the nearest of all."""
    middle = float(np.mean(np.log(sizes)))
    clean = [s for s in sizes if flags[s] is None] or list(sizes)
    return float(min(clean, key=lambda s: abs(math.log(s) - middle)))


def lr_batch_rule(
    jobs: pandas.DataFrame, direction: str, sweep_dir: Path | None = None
) -> dict[str, Any] | None:
    """The fitted lr-batch rule of a sweep's per-job table, or None when the sweep does not
    cover it (fewer than 3 batch sizes each with 3 or more lrs among completed jobs).
    `direction` is "maximize" or "minimize"; with `sweep_dir` also writes lr_batch_rule.png."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction={direction!r}: use maximize or minimize")
    cells = _cells(jobs)
    if cells is None:
        return None
    means = {s: {lr: float(v.mean()) for lr, v in by_lr.items()} for s, by_lr in cells.items()}
    found = _best_lrs(means, direction)
    sizes = np.array(list(cells))
    best = np.array([found[s][0] for s in sizes])
    alpha, log_c, se = _fit(sizes, best)
    repeats = [len(v) for by_lr in cells.values() for v in by_lr.values()]
    fit = "least squares of log lr* on log batch_size"
    peak = "best lr per batch size: quadratic in log10(lr) through the best mean objective"
    if max(repeats) > 1:
        alphas, spread = _bootstrap(cells, direction)
        low, high = np.quantile(alphas, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        interval = (
            f"{LEVEL:.0%} percentile bootstrap over repeats ({RESAMPLES} resamples of the "
            f"seeds within each (lr, batch_size) cell, numpy Generator seed {SEED})"
        )
    else:
        spread = None
        half = t_quantile((1 + LEVEL) / 2, len(sizes) - 2) * se
        low, high = alpha - half, alpha + half
        interval = (
            f"one repeat per cell, nothing to resample: {LEVEL:.0%} Student-t interval from "
            "the least-squares standard error of alpha"
        )
    low, high = float(low), float(high)
    flags = {s: found[s][1] for s in sizes}
    anchor = _anchor(sizes, flags)
    c = math.exp(log_c)
    result = {
        "alpha": alpha,
        "alpha_ci": [low, high],
        "c": c,
        "base": "c is the lr at batch size 1 on the fitted line: lr* = c x batch_size ** alpha",
        "best_lr": {_key(s): float(found[s][0]) for s in sizes},
        "flagged": {_key(s): why for s, why in flags.items() if why},
        "points": int(len(sizes)),
        "repeats": {"min": int(min(repeats)), "max": int(max(repeats))},
        "method": f"{peak} and its neighbours (its vertex when a peak inside the swept lrs, "
        f"else the best swept lr, flagged); {fit}; interval: {interval}",
        "compared": {
            name: {"alpha": value, "inside": bool(low <= value <= high)}
            for name, value in RULES.items()
        },
        "use": (
            f"lr_scaling=power lr_scaling_exponent={alpha:.2f} base_batch_size={_key(anchor)} "
            f"lr={found[anchor][0]:.3g}"
        ),
    }
    if sweep_dir is not None:
        result["plot"] = str(plot_rule(result, found, spread, anchor, Path(sweep_dir)))
    return result


def plot_rule(result: dict, found: dict, spread: dict | None, anchor: float, out: Path) -> Path:
    """Best lr against batch size on log-log axes: the fitted line, and linear and sqrt
    through the same anchor (the fitted lr at the batch size `use` names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.array(sorted(found))
    best = np.array([found[s][0] for s in sizes])
    grid = np.geomspace(sizes[0], sizes[-1], 50)
    alpha, (low, high), c = result["alpha"], result["alpha_ci"], result["c"]
    at_anchor = c * anchor**alpha
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    if spread is not None:
        lows = [np.quantile(spread[s], 0.025) for s in sizes]
        highs = [np.quantile(spread[s], 0.975) for s in sizes]
        err = np.clip([best - lows, np.array(highs) - best], 0, None)
        ax.errorbar(sizes, best, yerr=err, fmt="none", ecolor="0.6", capsize=3, zorder=1)
    clean = np.array([found[s][1] is None for s in sizes])
    ax.plot(sizes[clean], best[clean], "o", color="C0", label="best lr (fitted peak)", zorder=3)
    if (~clean).any():
        ax.plot(
            sizes[~clean], best[~clean], "o", mfc="white", color="C0", zorder=3,
            label="best lr (flagged: best swept lr)",
        )  # fmt: skip
    ax.plot(grid, c * grid**alpha, "-", color="C0", label=f"fit: alpha = {alpha:.2f}")
    for (name, power), style in zip(RULES.items(), ("--", ":"), strict=True):
        ax.plot(grid, at_anchor * (grid / anchor) ** power, style, color="0.3", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("best lr")
    bars = "; bars: 95% of bootstrap best lrs" if spread is not None else ""
    ax.set_title(
        f"best lr vs batch size: alpha = {alpha:.2f} [{low:.2f}, {high:.2f}]\n"
        f"linear and sqrt through batch {_key(anchor)}{bars}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / PNG
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
