"""The report's PNG plots: objective by lr, the lr x batch size grid, validation curves.

Where jobs repeat a configuration with other seeds, each plot draws the mean over the
repeats with its uncertainty (a 95% band, a tie mark, a min-max band) so that a difference
the seeds cannot tell apart does not read as a winner. The numbers drawn come from
`plots_data`, where tests check them; the Optuna view of a search is in `optuna_view`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from trainlab.report.names import better_word, label, titled
from trainlab.report.plots_curves import CURVES_OF_BEST, plot_val_curves
from trainlab.report.plots_data import (
    by_series,
    direction_of,
    has_repeats,
    heatmap_cells,
    lr_curves,
    lr_marks,
    save_png,
    series_keys,
    series_name,
    swept_keys,
)

__all__ = [
    "CURVES_OF_BEST",
    "better_word",
    "label",
    "plot_lr_batch_heatmap",
    "plot_objective_vs_lr",
    "plot_val_curves",
    "save_png",
    "swept_keys",
]
MAX_GRID = 12  # more distinct values than this: a search, not a grid
MARKS = {  # the jobs without a value, drawn along the bottom of the plot
    "diverged or failed": {"marker": "x", "color": "red", "s": 60},
    "pruned": {"marker": "v", "color": "darkorange", "s": 40},
}


def _single_lines(ax, done, keys) -> None:
    """One job per point (no repeats): the objective, or the cross-validation mean with its
    std as error bars."""
    groups = done.groupby(keys) if keys else [((), done)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        group = group.sort_values("lr")
        name = series_name(keys, values)
        y = group["cv_mean"] if "cv_mean" in group and group["cv_mean"].notna().all() else None
        if y is not None:
            ax.errorbar(group["lr"], y, yerr=group["cv_std"], marker="o", capsize=3, label=name)
        else:
            ax.plot(group["lr"], group["objective"], marker="o", label=name)


def _mean_lines(ax, done) -> None:
    """Per series: the mean over the repeats, its 95% band, and each repeat as a faint dot."""
    groups = dict(by_series(done))
    for name, points in lr_curves(done).items():
        lrs = [p.lr for p in points]
        line = ax.plot(lrs, [p.mean for p in points], marker="o", label=f"{name} (mean)")[0]
        color = line.get_color()
        lows, highs = [p.low for p in points], [p.high for p in points]
        ax.fill_between(lrs, lows, highs, alpha=0.15, lw=0, color=color)
        dots = groups[name]
        ax.scatter(dots["lr"], dots["objective"], s=12, alpha=0.35, color=color)


def plot_objective_vs_lr(
    df, sweep_dir: Path, metric: str, direction: str | None = None
) -> Path | None:
    """Objective against lr, one line per optimizer (and batch size if swept): with repeats,
    their mean, a shaded 95% interval and the repeats as faint dots. A log lr axis when lr
    spans more than a decade."""
    import matplotlib.pyplot as plt

    if "lr" not in df or df["lr"].nunique() < 2:
        return None
    direction = direction or direction_of(df)
    keys = series_keys(df)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    done = df[df["status"] == "completed"].dropna(subset=["objective"])
    repeated = has_repeats(df)
    if repeated:
        _mean_lines(ax, done)
    else:
        _single_lines(ax, done, keys)
    if len(done):
        bottom = done["objective"].min()
        for what, lrs in lr_marks(df).items():
            ax.scatter(lrs, [bottom] * len(lrs), label=what, zorder=3, **MARKS[what])
    lrs = df["lr"].dropna()
    log = lrs.min() > 0 and lrs.max() / lrs.min() > 10
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("learning rate" + (" (log scale)" if log else ""))
    ax.set_ylabel(f"{metric} ({better_word(direction)})")
    how = "mean of the seeds, shaded: 95% CI, dots: each seed" if repeated else "one job a point"
    if "cv_folds" in done and done["cv_folds"].notna().any():  # a job's value is a mean itself
        how += "; a job: its mean over its folds" + ("" if repeated else ", bars: their std")
    ax.set_title(f"{titled(metric, direction)} by learning rate\n({how})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return save_png(fig, sweep_dir / "objective_vs_lr.png")


def plot_lr_batch_heatmap(df, sweep_dir: Path, metric: str, direction: str) -> Path | None:
    """lr x batch size grid of the mean objective of the best configuration per cell, for
    grid sweeps (an Optuna search samples lr continuously: no grid to draw). With repeats,
    the cells the best cannot be told from (p >= 0.05) are outlined. Grey cells: no
    completed job; they name the statuses of the jobs there (diverged, failed, pruned, ...)."""
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    if not {"lr", "batch_size"} <= set(df):
        return None
    df = df.dropna(subset=["lr", "batch_size"])  # unreadable jobs have neither
    if not 2 <= df["lr"].nunique() <= MAX_GRID or not 2 <= df["batch_size"].nunique() <= MAX_GRID:
        return None
    started = df[df["status"] != "never ran"]
    ran: dict[tuple, set[str]] = {}  # cell -> the statuses of the jobs that ran there
    for b, lr, status in zip(started["batch_size"], started["lr"], started["status"], strict=True):
        ran.setdefault((float(lr), b), set()).add(str(status))
    cells = heatmap_cells(df.assign(direction=direction))
    lrs, sizes = sorted(df["lr"].unique()), sorted(df["batch_size"].unique())
    values = np.array(
        [
            [cells[(float(lr), b)].mean if (float(lr), b) in cells else np.nan for lr in lrs]
            for b in sizes
        ]
    )
    repeated = any(c.n > 1 for c in cells.values())
    fig, ax = plt.subplots(figsize=(1.3 * len(lrs) + 2.8, 0.85 * len(sizes) + 2.4))
    cmap = matplotlib.colormaps["viridis" if direction == "maximize" else "viridis_r"]
    cmap = cmap.with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
    ax.set_yticks(range(len(sizes)), [str(v) for v in sizes])
    ax.set_xlabel("learning rate (log-spaced values)" if lrs[-1] / lrs[0] > 10 else "learning rate")
    ax.set_ylabel("batch size")
    for i, b in enumerate(sizes):
        for j, lr in enumerate(lrs):
            cell = cells.get((float(lr), b))
            if cell is None:
                here = ran.get((float(lr), b))
                text = "/\n".join(sorted(here)) if here else "not run"
            else:
                text = ("★ " if cell.best else "") + f"{cell.mean:.3f}"
                text += f"\nn={cell.n}" if cell.n > 1 else ""
                text += f" +{cell.bad} div." if cell.bad else ""
                if repeated and cell.tied:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="black",
                bbox={"facecolor": "white", "alpha": 0.6, "lw": 0},
            )
    fig.colorbar(image, ax=ax, label=f"{metric} ({better_word(direction)})")
    ax.set_title(
        f"{titled(metric, direction)}: learning rate x batch size\n"
        f"({'mean over the seeds of ' if repeated else ''}the best of the other swept settings)",
        fontsize=10,
    )
    note = "★ best cell"
    if repeated:
        note += "; red outline: tied with the best (p >= 0.05, t-test on the seeds' values)"
        note += "; n: completed seeds, div.: diverged or failed ones (not in the mean)"
    lines = textwrap.wrap(note, width=int(fig.get_figwidth() * 15))
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, ha="left", va="bottom")
    room = 0.035 * len(lines) * 4.1 / fig.get_figheight()
    return save_png(fig, sweep_dir / "heatmap_lr_batch_size.png", rect=(0, room, 1, 1))
