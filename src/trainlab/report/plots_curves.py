"""val_curves.png: validation loss and accuracy per epoch for the best few configurations.

The best configuration (by its mean over the seeds) is drawn as the mean of its repeats'
curves with a min-max band, since with 3 seeds the spread itself says more than an interval
would; the next best as mean lines. Without repeats each line is one job, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from trainlab.report.plots_data import (
    EpochPoint,
    direction_of,
    epoch_band,
    label,
    ranked,
    repeats,
    save_png,
    swept_keys,
)

CURVES_OF_BEST = 3
PANELS = ("val/loss", "val/acc")


class Curve(NamedTuple):
    name: str
    n: int  # the repeats whose metrics.csv could be read
    bands: dict[str, list[EpochPoint]]  # metric -> per epoch over the repeats


def read_metrics(job: Path, unreadable: list[tuple[str, str]]):
    """The job's per-epoch metrics (the first fold's under cross-validation): the CSV
    logger's metrics.csv, else epochs.csv, which every run writes (logger=none too); None
    when neither is there. One that cannot be read is added to `unreadable` as (job, reason)."""
    import pandas as pd

    found = (
        sorted(job.glob("csv/metrics.csv"))
        or sorted(job.glob("fold_0/csv/metrics.csv"))
        or sorted(job.glob("epochs.csv"))
        or sorted(job.glob("fold_0/epochs.csv"))
    )
    if not found:
        return None
    try:
        logged = pd.read_csv(found[0])
    except Exception as err:  # empty, truncated, binary, not permitted
        unreadable.append((job.name, f"{found[0].relative_to(job)}: {err}"))
        return None
    if "epoch" not in logged:
        unreadable.append((job.name, f"{found[0].relative_to(job)}: no epoch column"))
        return None
    return logged


def val_curves(df, sweep_dir: Path, unreadable: list[tuple[str, str]]) -> list[Curve]:
    """The best CURVES_OF_BEST configurations with a readable curve, best first."""
    swept = [k for k in swept_keys(df) if k != "seed"]
    by_job = {str(j): row for j, row in zip(df["job"], df.to_dict("records"), strict=True)}
    curves = []
    for reps in ranked(repeats(df).values(), direction_of(df)):
        logged = [read_metrics(sweep_dir / job, unreadable) for job in reps.jobs]
        logged = [c for c in logged if c is not None]
        if not logged:
            continue
        row = by_job[reps.jobs[0]]
        settings = " ".join(f"{k}={row[k]}" for k in swept)
        if len(reps.jobs) == 1:
            name = f"job {reps.jobs[0]}: {settings}" if settings else f"job {reps.jobs[0]}"
        else:
            name = f"{settings or 'all jobs'} (mean of {len(logged)} seeds)"
        bands = {m: epoch_band(logged, m) for m in PANELS}
        curves.append(Curve(name, len(logged), {m: b for m, b in bands.items() if b}))
        if len(curves) == CURVES_OF_BEST:
            break
    return curves


def plot_val_curves(df, sweep_dir: Path, unreadable: list[tuple[str, str]]) -> Path | None:
    """Validation loss and accuracy per epoch for the best few configurations; the best one's
    repeats as a min-max band around their mean."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = val_curves(df[df["status"] == "completed"], sweep_dir, unreadable)
    panels = [m for m in PANELS if any(m in c.bands for c in curves)]
    if not curves or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.4), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
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
                    label=f"best: min-max of its {curve.n} seeds",
                )
        if metric.endswith("loss"):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(
            f"{metric} ({'log scale, ' if metric.endswith('loss') else ''}"
            f"{'lower' if metric.endswith('loss') else 'higher'} is better)"
        )
        ax.set_title(
            f"{label(metric).capitalize()} per epoch, best {len(curves)} configurations",
            fontsize=10,
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_png(fig, sweep_dir / "val_curves.png")
