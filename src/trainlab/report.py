"""The sweep report: one table and a few plots that answer "which lr, batch size, optimizer?".

Written by Hydra when a multirun ends (`SweepReport`, registered in conf/hydra/default.yaml)
and by hand on any sweep directory, finished or not:

    python -m trainlab.report outputs/train/multirun/<date>/<time>_<id>

It writes summary.csv, summary.md and PNG plots into the sweep directory. pandas and
matplotlib are imported only here, so that single runs do not pay for them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

STATUS_ORDER = {"completed": 0, "diverged": 1, "failed": 2, "unfinished": 3}
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


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Jobs that have started: sub-directories where Hydra saved the job's config."""
    return sorted(
        (p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")),
        key=lambda p: (len(p.name), p.name),
    )


def override_value(text: str) -> Any:
    """A value as typed on the command line: YAML reads `1e-05` (Hydra's spelling of 1e-5)
    as a string, so numbers get a second chance as floats."""
    value = yaml.safe_load(text) if text else text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def read_job(job: Path) -> dict[str, Any]:
    """One row of the summary: what was overridden, what came out."""
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    row: dict[str, Any] = {"job": job.name, "overrides": " ".join(overrides)}
    for override in overrides:
        key, _, value = override.partition("=")
        row[key.lstrip("+~")] = override_value(value)
    metrics_file = job / "metrics.json"
    if not metrics_file.exists():
        return {**row, "status": "unfinished"}
    record = json.loads(metrics_file.read_text())
    metrics = record.get("metrics", {})
    trained = record.get("trained", {})
    folds = trained.get("folds")
    row.update(record.get("hparams", {}))  # typed as the run saw them
    row.update(
        status=record["status"],
        objective=record.get("objective"),
        optimized_metric=record.get("optimized_metric"),
        direction=record.get("direction", "maximize"),
        epochs=folds[0]["epochs"] if folds else trained.get("epochs"),
        duration_s=record.get("duration_s"),
        error=record.get("error"),
    )
    if "cv/mean" in metrics:
        row["cv_mean"], row["cv_std"] = metrics["cv/mean"], metrics["cv/std"]
    row.update({name: value for name, value in metrics.items() if name.startswith("test/")})
    return row


def summarize(sweep_dir: Path):
    """All jobs as a DataFrame, best first: completed by objective, then the rest by status."""
    import pandas as pd

    rows = [read_job(job) for job in job_dirs(sweep_dir)]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    for column in ("objective", "direction", "optimized_metric", "error"):
        if column not in df:
            df[column] = None
    direction = df["direction"].dropna().iloc[0] if df["direction"].notna().any() else "maximize"
    completed = df["status"] == "completed"
    sign = -1.0 if direction == "maximize" else 1.0
    df["_rank"] = df["status"].map(STATUS_ORDER).fillna(9)
    df["_key"] = (sign * df["objective"].astype(float)).where(completed)
    df = df.sort_values(["_rank", "_key"], kind="stable").drop(columns=["_rank", "_key"])
    df.insert(0, "best", "")
    if completed.any():
        df.iloc[0, 0] = "★"
    return df.reset_index(drop=True)


def swept_keys(df) -> list[str]:
    """The overridden keys that took more than one value in this sweep."""
    keys = []
    for override in df["overrides"]:
        for part in str(override).split():
            key = part.partition("=")[0].lstrip("+~")
            if key not in keys and key in df and df[key].astype(str).nunique() > 1:
                keys.append(key)
    return keys


def _atomic(path: Path, write) -> None:
    """Call write(tmp_path), then rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
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
    return _save(fig, sweep_dir / "objective_vs_lr.png")


def plot_lr_batch_heatmap(df, sweep_dir: Path, metric: str, direction: str) -> Path | None:
    """lr x batch size grid of the best objective per cell, for grid sweeps (an Optuna search
    samples lr continuously: no grid to draw). Grey cells: only diverged or failed jobs."""
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np

    if not {"lr", "batch_size"} <= set(df) or not 2 <= df["lr"].nunique() <= MAX_GRID:
        return None
    if not 2 <= df["batch_size"].nunique() <= MAX_GRID:
        return None
    ran = {(b, lr) for b, lr in zip(df["batch_size"], df["lr"], strict=True)}
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
    cmap = matplotlib.colormaps["viridis" if direction == "maximize" else "viridis_r"].copy()
    cmap.set_bad("lightgrey")
    image = ax.imshow(np.ma.masked_invalid(table.to_numpy(dtype=float)), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(table.columns)), [f"{v:g}" for v in table.columns])
    ax.set_yticks(range(len(table.index)), [str(v) for v in table.index])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size")
    for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
        if np.isnan(value):
            ran_here = (table.index[i], table.columns[j]) in ran
            text = "diverged/\nfailed" if ran_here else "not run"
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
    return _save(fig, sweep_dir / "heatmap_lr_batch_size.png")


def plot_val_curves(df, sweep_dir: Path) -> Path | None:
    """Validation loss and accuracy per epoch for the best few completed jobs."""
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
        logged = pd.read_csv(csv)
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
    return _save(fig, sweep_dir / "val_curves.png")


def write_report(sweep_dir: Path | str) -> Path | None:
    """summary.csv, summary.md and the plots in `sweep_dir`; returns summary.md's path."""
    import matplotlib

    matplotlib.use("Agg")
    sweep_dir = Path(sweep_dir)
    df = summarize(sweep_dir)
    if df.empty:
        log.warning("no jobs under %s: nothing to report", sweep_dir)
        return None
    metric = (
        df["optimized_metric"].dropna().iloc[0]
        if df["optimized_metric"].notna().any()
        else "objective"
    )
    direction = df["direction"].dropna().iloc[0] if df["direction"].notna().any() else "maximize"

    columns = ["best", "job", "overrides", "status", "objective"]
    columns += [c for c in ("cv_mean", "cv_std") if c in df]
    columns += sorted(c for c in df if c.startswith("test/"))
    columns += [c for c in ("epochs", "duration_s") if c in df]
    columns += [k for k in swept_keys(df) if k not in columns]
    columns += ["error"]
    table = df[[c for c in columns if c in df]]
    _atomic(sweep_dir / "summary.csv", lambda tmp: table.to_csv(tmp, index=False))

    plots = [
        plot_objective_vs_lr(df, sweep_dir, metric),
        plot_lr_batch_heatmap(df, sweep_dir, metric, direction),
        plot_val_curves(df, sweep_dir),
    ]
    counts = df["status"].value_counts()
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"- sweep directory: `{sweep_dir}`",
        f"- objective: {metric} ({label(metric)}), {direction}d",
        "- jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUS_ORDER if counts.get(s)),
    ]
    if (df["best"] == "★").any():
        best = df.iloc[0]
        lines.append(
            f"- best: job {best['job']} (`{best['overrides']}`), objective {best['objective']:.4f}"
        )
    shown = table.drop(columns=["error"]).astype({"objective": object})
    # a diverged or failed job's objective is a placeholder for sweepers, not a result
    shown.loc[shown["status"] != "completed", "objective"] = None
    lines += ["", shown.to_markdown(index=False, floatfmt=".4g"), ""]
    failed = df[df["error"].notna()]
    if len(failed):
        lines += ["## Jobs that did not complete", ""]
        lines += [f"- job {r['job']} ({r['status']}): {r['error']}" for _, r in failed.iterrows()]
        lines.append("")
    lines += [f"![{p.stem}]({p.name})" for p in plots if p is not None]
    text = "\n".join(lines) + "\n"
    summary = sweep_dir / "summary.md"
    _atomic(summary, lambda tmp: Path(tmp).write_text(text))
    log.info("sweep report: %s", summary)
    return summary


class SweepReport(Callback):
    """Hydra callback: write the report when a multirun ends (never fails the sweep)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            write_report(Path(config.hydra.sweep.dir))
        except Exception as err:  # a report must not turn a finished sweep into a failure
            log.error("could not write the sweep report: %s: %s", type(err).__name__, err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainlab.report",
        description="Summarize a sweep directory: summary.csv, summary.md and PNG plots.",
    )
    parser.add_argument("sweep_dir", type=Path, help="outputs/<task>/multirun/<date>/<time>_<id>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"Error: sweep_dir={args.sweep_dir} is not a directory.", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = write_report(args.sweep_dir)
    if summary is None:
        print(
            f"Error: {args.sweep_dir} holds no job directories (*/.hydra/overrides.yaml).",
            file=sys.stderr,
        )
        return 2
    print(summary.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
