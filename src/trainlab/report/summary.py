"""The summary table (best first) and `write_report`, which writes every file of the report."""

from __future__ import annotations

import logging
from pathlib import Path

from trainlab.report.files import _atomic
from trainlab.report.jobs import STATUS_ORDER, job_dirs, read_job
from trainlab.report.plots import (
    label,
    plot_lr_batch_heatmap,
    plot_objective_vs_lr,
    plot_val_curves,
    swept_keys,
)

log = logging.getLogger("trainlab.report")


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
