"""val_curves.png: the validation metrics the jobs logged, per epoch, for the best few
configurations.

The panels are the task's own metrics, read from the jobs' per-epoch CSVs: val/loss first,
then the objective's metric (val/auroc for val/auroc_best), then the other val/ metrics
(not their `_best` running maxima, not unigram baselines), at most MAX_PANELS. The best
configuration (by its mean over the seeds) is drawn as the mean of its repeats' curves with
a min-max band, since with 3 seeds the spread itself says more than an interval would; the
next best as mean lines. A cross-validation job counts each fold as one curve, so its line
is the mean over its folds and its band their min and max. Without repeats or folds each
line is one job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from trainlab.report.names import base_metric, better_word, capital, direction_for, label
from trainlab.report.plots_data import (
    EpochPoint,
    direction_of,
    epoch_band,
    objective_of,
    ranked,
    repeats,
    save_png,
    swept_keys,
)

CURVES_OF_BEST = 3
MAX_PANELS = 4
FOLD_DIR = re.compile(r"fold_(\d+)")
LOGS = ("csv/metrics.csv", "epochs.csv")  # the CSV logger's, else the one every run writes


class Curve(NamedTuple):
    name: str
    n: int  # the curves averaged: the repeats' (their folds' under cross-validation)
    bands: dict[str, list[EpochPoint]]  # metric -> per epoch over those curves
    spread: str = ""  # what the band spans: "3 seeds", "5 folds", "3 seeds x 5 folds"


def _read(job: Path, where: Path, unreadable: list[tuple[str, str]]):
    """One run's per-epoch metrics from `where` (the job or one of its fold_<k>/)."""
    import pandas as pd

    found = next((where / name for name in LOGS if (where / name).is_file()), None)
    if found is None:
        return None
    try:
        logged = pd.read_csv(found)
    except Exception as err:  # empty, truncated, binary, not permitted
        unreadable.append((job.name, f"{found.relative_to(job)}: {err}"))
        return None
    if "epoch" not in logged:
        unreadable.append((job.name, f"{found.relative_to(job)}: no epoch column"))
        return None
    return logged


def fold_dirs(job: Path) -> list[Path]:
    """A cross-validation job's fold_<k>/ directories, by k."""
    found = [(int(m.group(1)), p) for p in job.glob("fold_*") if (m := FOLD_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def read_runs(job: Path, unreadable: list[tuple[str, str]]) -> list:
    """The per-epoch metrics of each run of the job: one DataFrame, or one per fold under
    cross-validation (the folds that can be read). A CSV that cannot be read is added to
    `unreadable` as (job, reason)."""
    folds = fold_dirs(job)
    runs = [_read(job, where, unreadable) for where in folds or [job]]
    return [r for r in runs if r is not None]


def read_metrics(job: Path, unreadable: list[tuple[str, str]]):
    """The job's per-epoch metrics, or None: the first fold's under cross-validation (the
    curves use read_runs, which reads them all)."""
    runs = read_runs(job, unreadable)
    return runs[0] if runs else None


def panel_metrics(columns, objective: str | None, most: int = MAX_PANELS) -> list[str]:
    """The validation metrics to draw, in order (see the module's docstring)."""
    shown = [
        c
        for c in dict.fromkeys(str(c) for c in columns)
        if c.startswith("val/") and not c.endswith("_best") and "unigram" not in c
    ]
    first = ["val/loss", base_metric(objective)] if objective else ["val/loss"]
    first = [m for m in dict.fromkeys(first) if m in shown]
    return (first + sorted(m for m in shown if m not in first))[:most]


def spread_words(seeds: int, folds: list[int]) -> str:
    """What a band spans: "3 seeds", "5 folds", "3 seeds x 5 folds"."""
    words = [f"{seeds} seeds"] if seeds > 1 else []
    if any(folds):
        k = folds[0] if len(set(folds)) == 1 else max(folds)
        words.append(f"{k} folds" if len(set(folds)) == 1 else f"up to {k} folds")
    return " x ".join(words)


def val_curves(df, sweep_dir: Path, unreadable: list[tuple[str, str]]) -> list[Curve]:
    """The best CURVES_OF_BEST configurations with a readable curve, best first; each with
    the bands of every validation metric its jobs logged (panel_metrics picks which)."""
    swept = [k for k in swept_keys(df) if k != "seed"]
    by_job = {str(j): row for j, row in zip(df["job"], df.to_dict("records"), strict=True)}
    curves = []
    for reps in ranked(repeats(df).values(), direction_of(df)):
        per_job = [(job, read_runs(sweep_dir / job, unreadable)) for job in reps.jobs]
        per_job = [(job, runs) for job, runs in per_job if runs]
        if not per_job:
            continue
        logged = [run for _, runs in per_job for run in runs]
        folds = [len(runs) if fold_dirs(sweep_dir / job) else 0 for job, runs in per_job]
        spread = spread_words(len(per_job), folds)
        row = by_job[reps.jobs[0]]
        settings = " ".join(f"{k}={row[k]}" for k in swept)
        if len(per_job) == 1:
            name = f"job {per_job[0][0]}: {settings}" if settings else f"job {per_job[0][0]}"
            name += f" (mean of {spread})" if spread else ""
        else:
            name = f"{settings or 'all jobs'} (mean of {spread})"
        metrics = panel_metrics([c for run in logged for c in run.columns], None, most=99)
        bands = {m: epoch_band(logged, m) for m in metrics}
        curves.append(Curve(name, len(logged), {m: b for m, b in bands.items() if b}, spread))
        if len(curves) == CURVES_OF_BEST:
            break
    return curves


def curve_panels(curves: list[Curve], objective: str | None) -> list[str]:
    """The panels of val_curves.png: panel_metrics of what the drawn curves logged."""
    return panel_metrics([m for c in curves for m in c.bands], objective)


def panel_text(metric: str, objective: str | None, direction: str | None, configs: int):
    """(title, y label) of one panel: the metric in words and which way is better (the
    records' direction for the objective's own metric)."""
    better = better_word(direction_for(metric, objective, direction))
    log = metric.endswith("loss")
    how = ", ".join(w for w in ("log scale" if log else "", better) if w)
    title = f"{capital(label(metric))} per epoch, best {configs} configurations"
    return title + (f"\n({better})" if better else ""), metric + (f" ({how})" if how else "")


def plot_val_curves(
    df, sweep_dir: Path, unreadable: list[tuple[str, str]], out: Path | None = None
) -> Path | None:
    """The validation metrics per epoch for the best few configurations; the best one's
    repeats (and folds) as a min-max band around their mean. The jobs are in `sweep_dir`;
    the PNG goes to `out` (default: `sweep_dir`)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = val_curves(df[df["status"] == "completed"], sweep_dir, unreadable)
    objective, direction = objective_of(df), direction_of(df)
    panels = curve_panels(curves, objective)
    if not curves or not panels:
        return None
    cols = min(len(panels), 2)  # 3 or 4 panels: a 2 x 2 grid, readable at page width
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, panels, strict=False):
        for rank, curve in enumerate(curves):
            band = curve.bands.get(metric)
            if not band:
                continue
            epochs = [p.epoch for p in band]
            best = rank == 0
            line = ax.plot(
                epochs,
                [p.mean for p in band],
                marker=".",
                lw=2.2 if best else 1.2,
                label=("best: " if best else "") + curve.name,
            )[0]
            if best and curve.n > 1:
                ax.fill_between(
                    epochs,
                    [p.low for p in band],
                    [p.high for p in band],
                    alpha=0.25,
                    lw=0,
                    color=line.get_color(),
                    label=f"best: min-max of its {curve.spread}",
                )
        if metric.endswith("loss"):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        title, ylabel = panel_text(metric, objective, direction, len(curves))
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_png(fig, Path(out or sweep_dir) / "val_curves.png")
