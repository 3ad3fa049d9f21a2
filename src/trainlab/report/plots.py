"""The report's PNG plots: objective by lr, the lr x batch size grid, validation curves.

Only completed jobs give a point or a cell value: a pruned job's value is partial, a diverged
or failed one's a placeholder. The Optuna view of a search is in `optuna_view`.
"""

from __future__ import annotations

from pathlib import Path

from trainlab.report.files import write_atomic

METRIC_LABELS = {
    "val/acc_best": "best validation accuracy",
    "val/acc": "validation accuracy",
    "val/loss": "validation loss",
    "test/acc": "test accuracy",
    "test/loss": "test loss",
}
CURVES_OF_BEST = 3
MAX_GRID = 12  # more distinct values than this: a search, not a grid


def label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def swept_keys(df) -> list[str]:
    """The overridden keys that took more than one value in this sweep."""
    keys = []
    for override in df["overrides"]:
        for part in str(override).split():
            key = part.partition("=")[0].lstrip("+~")
            if key not in keys and key in df and df[key].astype(str).nunique() > 1:
                keys.append(key)
    return keys


def save_png(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def plot_objective_vs_lr(df, sweep_dir: Path, metric: str) -> Path | None:
    """Objective against lr on a log axis, one line per optimizer (and batch size if swept)."""
    import matplotlib.pyplot as plt

    if "lr" not in df or df["lr"].nunique() < 2:
        return None
    series = [k for k in ("optimizer", "batch_size") if k in df and df[k].nunique() > 1]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = df[df["status"] == "completed"]
    groups = done.groupby(series) if series else [((), done)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        group = group.sort_values("lr")
        name = ", ".join(f"{k}={v}" for k, v in zip(series, key, strict=True)) or "all jobs"
        y = group["cv_mean"] if "cv_mean" in group and group["cv_mean"].notna().all() else None
        if y is not None:
            ax.errorbar(group["lr"], y, yerr=group["cv_std"], marker="o", capsize=3, label=name)
        else:
            ax.plot(group["lr"], group["objective"], marker="o", label=name)
    bad = df[df["status"].isin(["diverged", "failed"])]
    if len(bad) and len(done):
        bottom = done["objective"].min()
        ax.scatter(
            bad["lr"],
            [bottom] * len(bad),
            marker="x",
            color="red",
            s=60,
            label="diverged or failed",
            zorder=3,
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(label(metric))
    ax.set_title(f"{label(metric).capitalize()} by learning rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, sweep_dir / "objective_vs_lr.png")


def plot_lr_batch_heatmap(df, sweep_dir: Path, metric: str, direction: str) -> Path | None:
    """lr x batch size grid of the best objective per cell, for grid sweeps (an Optuna search
    samples lr continuously: no grid to draw). Grey cells: no completed job; they name the
    statuses of the jobs there (diverged, failed, pruned, ...)."""
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np

    if not {"lr", "batch_size"} <= set(df):
        return None
    df = df.dropna(subset=["lr", "batch_size"])  # unreadable jobs have neither
    if not 2 <= df["lr"].nunique() <= MAX_GRID or not 2 <= df["batch_size"].nunique() <= MAX_GRID:
        return None
    started = df[df["status"] != "never ran"]
    ran: dict[tuple, set[str]] = {}  # cell -> the statuses of the jobs that ran there
    for b, lr, status in zip(started["batch_size"], started["lr"], started["status"], strict=True):
        ran.setdefault((b, lr), set()).add(str(status))
    done = df[df["status"] == "completed"]
    table = done.pivot_table(
        index="batch_size",
        columns="lr",
        values="objective",
        aggfunc="max" if direction == "maximize" else "min",
    )
    table = table.reindex(
        index=sorted(df["batch_size"].unique()), columns=sorted(df["lr"].unique())
    )
    fig, ax = plt.subplots(figsize=(1.2 * len(table.columns) + 2.5, 0.8 * len(table.index) + 2))
    cmap = matplotlib.colormaps["viridis" if direction == "maximize" else "viridis_r"]
    cmap = cmap.with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(table.to_numpy(dtype=float)), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(table.columns)), [f"{v:g}" for v in table.columns])
    ax.set_yticks(range(len(table.index)), [str(v) for v in table.index])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size")
    for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
        if np.isnan(value):
            here = ran.get((table.index[i], table.columns[j]))
            text = "/\n".join(sorted(here)) if here else "not run"
        else:
            text = f"{value:.3f}"
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
    fig.colorbar(image, ax=ax, label=label(metric))
    ax.set_title(
        f"{label(metric).capitalize()}: learning rate x batch size\n"
        "(best over the other swept settings)"
    )
    return save_png(fig, sweep_dir / "heatmap_lr_batch_size.png")


def plot_val_curves(df, sweep_dir: Path, unreadable: list[tuple[str, str]]) -> Path | None:
    """Validation loss and accuracy per epoch for the best few completed jobs. A metrics.csv
    that cannot be read is added to `unreadable` as (job, reason) and left out."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    swept = swept_keys(df)
    curves = []
    for _, row in df[df["status"] == "completed"].head(CURVES_OF_BEST).iterrows():
        job = sweep_dir / str(row["job"])
        csv = next(
            iter(sorted(job.glob("csv/metrics.csv")) or sorted(job.glob("fold_0/csv/metrics.csv"))),
            None,
        )
        if csv is None:
            continue
        try:
            logged = pd.read_csv(csv)
        except Exception as err:  # empty, truncated, binary, not permitted
            unreadable.append((str(row["job"]), f"{csv.relative_to(job)}: {err}"))
            continue
        if "epoch" not in logged:
            unreadable.append((str(row["job"]), f"{csv.relative_to(job)}: no epoch column"))
            continue
        settings = " ".join(f"{k}={row[k]}" for k in swept)
        name = f"job {row['job']}: {settings}" if settings else f"job {row['job']}"
        curves.append((name, logged))
    panels = [m for m in ("val/loss", "val/acc") if any(m in c for _, c in curves)]
    if not curves or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
        for name, logged in curves:
            if metric in logged:
                per_epoch = logged.dropna(subset=[metric]).groupby("epoch")[metric].last()
                ax.plot(per_epoch.index, per_epoch.values, marker=".", label=name)
        if metric.endswith("loss"):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label(metric))
        ax.set_title(f"{label(metric).capitalize()} per epoch, best {len(curves)} jobs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_png(fig, sweep_dir / "val_curves.png")
