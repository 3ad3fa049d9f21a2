"""The summary table (best first) and `write_report`, which writes every file of the report."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.report import configs as grouping
from trainlab.report import objectives, recommend
from trainlab.report.files import write_atomic
from trainlab.report.jobs import STATUS_ORDER, job_dirs, overrides_row, read_job, read_overrides
from trainlab.report.names import better_word, label
from trainlab.report.optuna_view import optuna_plots
from trainlab.report.plots import (
    plot_lr_batch_heatmap,
    plot_objective_vs_lr,
    plot_val_curves,
    swept_keys,
)
from trainlab.search.plan import SweepPlan, saved_plan

log = logging.getLogger("trainlab.report")
NOT_DRAWN = "(a trial the search did not draw)"


def summarize(sweep_dir: Path, plan: SweepPlan | None = None, jobs_ended: bool = False):
    """All jobs as a DataFrame, best first: completed by objective, then the rest by status
    (pruned trials first, in job order: they have no final value to rank by), the planned
    jobs that never ran last. `jobs_ended`: see read_job."""
    import pandas as pd

    jobs = job_dirs(sweep_dir)
    rows = [read_job(job, jobs_ended) for job in jobs]
    if plan is not None:
        started = {job.name: read_overrides(job)[0] for job in jobs}
        for num, overrides in plan.never_ran(started):
            row = overrides_row(overrides) if overrides is not None else {"overrides": NOT_DRAWN}
            rows.append({**row, "job": num, "status": "never ran"})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    for column in ("objective", "direction", "optimized_metric", "error", "unreadable"):
        if column not in df:
            df[column] = None
    for whole in ("trial", "cv_folds"):  # whole numbers, also beside jobs that have none
        if whole in df:
            with contextlib.suppress(TypeError, ValueError):  # not numbers: left as they are
                df[whole] = df[whole].astype("Int64")
    found = objectives.split(df)
    if len(found.groups) > 1:  # ranked within each objective, never across (objectives.py)
        parts = [best_first(df.loc[o.index], o.direction or "maximize") for o in found.groups]
        rest = best_first(df.loc[found.unknown], "maximize")
        rest["best"] = ""  # whatever it is, it is ranked against nothing
        return pd.concat([*parts, rest]).reset_index(drop=True)
    direction = df["direction"].dropna().iloc[0] if df["direction"].notna().any() else "maximize"
    return best_first(df, direction).reset_index(drop=True)


def best_first(df, direction: str):
    """The rows completed first, by objective the `direction` way, then by status; the
    first completed row marked ★ in a new `best` column."""
    df = df.copy()
    completed = df["status"] == "completed"
    sign = -1.0 if direction == "maximize" else 1.0
    df["_rank"] = df["status"].map(STATUS_ORDER).fillna(len(STATUS_ORDER))
    df["_key"] = (sign * df["objective"].astype(float)).where(completed)
    df = df.sort_values(["_rank", "_key"], kind="stable").drop(columns=["_rank", "_key"])
    df.insert(0, "best", "")
    if completed.any():
        df.iloc[0, 0] = "★"
    return df


def write_report(
    sweep_dir: Path | str,
    plan: SweepPlan | None = None,
    jobs_ended: bool = False,
    ended_early: str | None = None,
    repeat_knobs: list[str] | tuple[str, ...] | None = None,
) -> Path | None:
    """summary.csv, summary.md, configs.csv, configs.md, report.json and the plots in
    `sweep_dir`; returns summary.md's path. A sweep whose jobs optimize different
    objectives gets a report per objective in objectives/<metric>-<direction>/ and, in
    `sweep_dir`, files that put them side by side, never ranked together (objectives.py).

    `plan`: the jobs the sweep was to run (default: from multirun.yaml, for a grid); those
    without a directory are listed as never ran. `jobs_ended`: no job of the sweep runs any
    more. `ended_early`: why the sweep stopped before its end (e.g. "stopped by SIGTERM").
    `repeat_knobs`: the knobs whose jobs are repeats of one configuration (default: the
    sweep's `report_repeat_knobs`, else seed; see configs.py).
    """
    import matplotlib

    matplotlib.use("Agg")
    sweep_dir = Path(sweep_dir)
    df = summarize(sweep_dir, saved_plan(sweep_dir) if plan is None else plan, jobs_ended)
    if df.empty:
        log.warning("no jobs under %s: nothing to report", sweep_dir)
        return None
    knobs = tuple(repeat_knobs) if repeat_knobs else grouping.repeat_knobs(sweep_dir)
    found = objectives.split(df)
    if len(found.groups) > 1:
        return objectives.write_split(sweep_dir, df, found, knobs, ended_early)
    part = report_part(sweep_dir, sweep_dir, df, knobs, ended_early)
    lines = [f"# Sweep report: {sweep_dir.name}", "", *part.lines]
    lines += [f"![{p.stem}]({p.name})" for p in part.plots]
    text = "\n".join(lines) + "\n"
    summary = sweep_dir / "summary.md"
    write_atomic(summary, lambda tmp: Path(tmp).write_text(text))
    log.info("sweep report: %s", summary)
    return summary


@dataclass
class Part:
    """The report of one objective's jobs: summary.md's lines below its title (the plots
    left out), the plots, and the summary and configuration tables written to its files."""

    lines: list[str]
    plots: list[Path]
    table: Any
    configs: Any


def report_part(
    sweep_dir: Path, out: Path, df, knobs, ended_early: str | None, optuna: bool = True
) -> Part:
    """Writes summary.csv, configs.csv, configs.md, report.json and the plots of the jobs
    `df` (all of one objective, best first) into `out`; `sweep_dir`: where the jobs are.
    `optuna`: draw the Optuna study's plots (one objective for the whole study)."""
    metric = (
        df["optimized_metric"].dropna().iloc[0]
        if df["optimized_metric"].notna().any()
        else "objective"
    )
    direction = df["direction"].dropna().iloc[0] if df["direction"].notna().any() else "maximize"

    answer, rule_plot, configs = write_answers(out, df, metric, direction, knobs)
    df = df.drop(columns=["_overrides"], errors="ignore")
    started = df[df["status"] != "never ran"]
    found: list[tuple[str, str]] = []  # files the plots could not read
    plots = [
        plot_objective_vs_lr(started, out, metric),
        plot_lr_batch_heatmap(df, out, metric, direction),
        plot_val_curves(started, sweep_dir, found, out),
    ]
    searched, not_drawn, study = optuna_plots(sweep_dir, metric) if optuna else ([], [], None)
    plots += searched
    for job, why in found:
        at = df["job"] == job
        df.loc[at, "unreadable"] = "; ".join(
            str(v) for v in (df.loc[at, "unreadable"].iloc[0], why) if isinstance(v, str)
        )
    unreadable = [(r["job"], r["unreadable"]) for _, r in df[df["unreadable"].notna()].iterrows()]

    columns = ["best", "job", "trial", "overrides", "status", "objective", "reached"]
    columns += ["reached_value"] if "reached_value" in df else []
    columns += [c for c in ("cv_mean", "cv_std", "cv_folds") if c in df]
    columns += sorted(c for c in df if c.startswith("test/"))
    columns += [c for c in ("epochs", "steps", "duration_s") if c in df and df[c].notna().any()]
    columns += [k for k in swept_keys(df) if k not in columns]
    columns += ["error", "unreadable"]
    table = df[[c for c in columns if c in df]]
    write_atomic(out / "summary.csv", lambda tmp: table.to_csv(tmp, index=False))

    counts = df["status"].value_counts()
    lines = [
        f"- sweep directory: `{sweep_dir}`",
        f"- objective: {metric} ({label(metric)}), {direction}d: {better_word(direction)}",
        "- jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUS_ORDER if counts.get(s)),
    ]
    cv = cv_note(df, metric)
    if cv:
        lines.append(f"- cross-validation: {cv}")
    if counts.get("pruned"):
        pruned_metric = df["pruned_metric"].dropna()
        then = pruned_metric.iloc[0] if len(pruned_metric) else "the pruned metric"
        lines.append(
            f"- pruned: stopped early by the pruner, an outcome, not a failure; `reached` is "
            f"how far they trained and `reached_value` their {then} then (not ranked)"
        )
    if study:
        lines.append(f"- {study}" + "".join(f"; {why}" for why in not_drawn))
    if ended_early:
        lines.append(
            f"- **the sweep ended early** ({ended_early}): the jobs it was running are "
            "interrupted, the rest never ran"
        )
    if (df["best"] == "★").any():
        best = df.iloc[0]
        lines.append(
            f"- best: job {best['job']} (`{best['overrides']}`), objective {best['objective']:.4f}"
        )
    if unreadable:
        lines.append(f"- unreadable: {len(unreadable)} job files (listed below)")
    lines += ["", *answer]
    shown = table.drop(columns=["error", "unreadable"]).astype(object)
    shown = shown.where(shown.notna(), None)  # an empty cell, not "nan", where nothing is known
    # a diverged or failed job's objective is a placeholder for sweepers, not a result
    shown.loc[shown["status"] != "completed", "objective"] = None
    if cv:  # the column says what a cross-validation job's objective is
        of = f"objective (cross-validation: mean of {cv_folds(df)} folds)"
        shown = shown.rename(columns={"objective": of})
    lines += ["## Jobs", "", shown.to_markdown(index=False, floatfmt=".4g"), ""]
    failed = df[df["error"].notna() & (df["status"] != "pruned")]
    if len(failed):
        lines += ["## Jobs that did not complete", ""]
        lines += [f"- job {r['job']} ({r['status']}): {r['error']}" for _, r in failed.iterrows()]
        lines.append("")
    never = df[df["status"] == "never ran"]
    if len(never):
        lines += ["## Jobs that never ran", ""]
        grid = never[never["overrides"] != NOT_DRAWN]
        lines += [f"- job {r['job']}: `{r['overrides']}`" for _, r in grid.iterrows()]
        if len(grid) < len(never):
            lines.append(f"- {len(never) - len(grid)} trials of the search were never drawn")
        lines.append("")
    if unreadable:
        lines += ["## Unreadable job files (the rest of the report is from what could be read)", ""]
        lines += [f"- job {job}: {why}" for job, why in unreadable]
        lines.append("")
        for job, why in unreadable:
            log.warning("sweep report: job %s: unreadable: %s", job, why)
    plots.append(rule_plot)
    return Part(lines, [p for p in plots if p is not None], table, configs)


def write_answers(out: Path, df, metric: str, direction: str, knobs):
    """configs.csv, configs.md and report.json (configs.py, recommend.py); returns the
    recommendation section of summary.md, the lr-batch-rule plot's path (or None) and the
    configuration table."""
    ranked = grouping.rank(grouping.group(df, knobs), direction)
    grouping.mark_ties(ranked)
    notes = grouping.notes(ranked, knobs)
    folds = cv_folds(df)
    if folds:  # configs.md and report.json say it too: a repeat's value is a mean itself
        notes.append(f"cross-validation: each repeat's value is its mean over {folds} folds")
    pending = int(df["status"].isin(("running", "unfinished", "never ran")).sum())
    if pending:  # a report of a running (or stopped) sweep: the ranking may still change
        notes.insert(0, f"{pending} jobs are running or have not run: this answer is provisional")
    table = grouping.table(ranked)
    write_atomic(out / "configs.csv", lambda tmp: table.to_csv(tmp, index=False))
    text = grouping.markdown(table, metric, direction, notes)
    write_atomic(out / "configs.md", lambda tmp: Path(tmp).write_text(text))
    recommended = recommend.recommendation(ranked, df, knobs)
    jobs = df.drop(columns=["_overrides"], errors="ignore")
    rule = recommend.lr_batch_rule(jobs, direction, out)
    meta = {"objective": metric, "direction": direction, "repeat_knobs": list(knobs)}
    recommend.write_json(out / "report.json", recommended, table, notes, rule, meta)
    plot = rule.get("plot") if isinstance(rule, dict) else None
    plot = Path(plot) if isinstance(plot, str) and Path(plot).is_file() else None
    said = f"{metric} (mean of {folds} folds)" if folds else metric
    return recommend.summary_lines(recommended, notes, said, rule), plot, table


def cv_note(df, metric: str) -> str | None:
    """What a cross-validation job's numbers are, in words; None when no job cross-validated."""
    k = cv_folds(df)
    if k is None:
        return None
    return (
        f"a job's objective is the mean of its {metric} over its {k} folds (cv_std: their "
        "standard deviation); its epochs and steps are the mean per fold, its curves the "
        "mean over the folds with their min-max band"
    )


def cv_folds(df) -> str | None:
    """How many folds the cross-validation jobs ran ("3", or "3/5" when they differ)."""
    if "cv_folds" not in df or not df["cv_folds"].notna().any():
        return None
    return "/".join(str(k) for k in sorted({int(k) for k in df["cv_folds"].dropna()}))
