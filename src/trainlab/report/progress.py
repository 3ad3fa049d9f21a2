"""What a sweep says on the console: one line per finished job, and the top of the ranking at
the end, so that a SLURM log or a terminal tells how the sweep goes without opening a file.

    job 3/6 lr=0.003 seed=1: completed, val/acc_best 0.9815 (best so far 0.9852, job 1)
    job 4/6 lr=0.1 seed=1: pruned at epoch 4 (val/acc 0.91) (best so far 0.9852, job 1)

Everything is read from the jobs' records, so it works in the sweep process and in a job's
own process (hydra/launcher=joblib) alike.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from trainlab.report import pruned
from trainlab.report.jobs import job_dirs, read_record
from trainlab.search.plan import saved_plan

TOP = 5


def _objective(record: dict[str, Any] | None) -> float | None:
    value = (record or {}).get("objective")
    if (record or {}).get("status") != "completed" or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def objective_of(record: dict[str, Any] | None) -> tuple[Any, Any] | None:
    """(optimized_metric, direction) of a record, None when it does not say."""
    metric = (record or {}).get("optimized_metric")
    return (metric, record.get("direction")) if metric else None


def best_so_far(
    sweep_dir: Path, objective: tuple[Any, Any] | None = None, records: list | None = None
) -> tuple[str, float, str] | None:
    """(job, objective, metric) of the best completed job of the sweep so far, by the
    direction its records give (maximize only where none says); among the jobs of
    `objective` ((optimized_metric, direction)) only, when given. `records`: the sweep's
    [(job dir, record)], when already read."""
    best = None
    if records is None:
        records = [(job, read_record(job)[0]) for job in job_dirs(sweep_dir)]
    if objective is not None:
        records = [(job, r) for job, r in records if objective_of(r) == objective]
    said = [r.get("direction") for _, r in records if r and r.get("direction")]
    sign = 1.0 if said and said[0] == "minimize" else -1.0
    for job, record in records:
        value = _objective(record)
        if value is None:
            continue
        if best is None or sign * value < sign * best[1]:
            best = (job.name, value, str(record.get("optimized_metric", "objective")))
    return best


def _over_folds(record: dict[str, Any]) -> str:
    """` (mean of 5 folds)` for a cross-validation job's objective, else ''."""
    trained = record.get("trained")
    cv = trained.get("cv") if isinstance(trained, dict) else None
    folds = cv.get("folds") if isinstance(cv, dict) else None
    return f" (mean of {folds} folds)" if isinstance(folds, int) and folds > 0 else ""


def planned_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the sweep was to run (a grid's size, a search's n_trials)."""
    plan = saved_plan(sweep_dir)
    return len(plan.grid) if plan.grid is not None else plan.trials


def job_line(sweep_dir: Path, job_dir: Path, overrides: list[str]) -> str:
    """`job 3/6 lr=0.003: completed, val/acc_best 0.9815 (best so far 0.9852, job 1)`."""
    total = planned_jobs(sweep_dir)
    record, problem = read_record(job_dir)
    status = (record or {}).get("status") or (f"unreadable ({problem})" if problem else "no record")
    if status == "pruned":  # how far it got, not a failure
        found = record.get("pruned")
        status = pruned.describe(found if isinstance(found, dict) else {})
    line = f"job {job_dir.name}{f'/{total}' if total else ''} {' '.join(overrides)}: {status}"
    value = _objective(record)
    if value is not None:
        line += f", {record.get('optimized_metric')} {value:.4g}{_over_folds(record)}"
    elif (record or {}).get("error"):
        line += f": {str(record['error'])[:160]}"
    records = [(job, read_record(job)[0]) for job in job_dirs(sweep_dir)]
    seen = {objective_of(r) for _, r in records} - {None}
    if len(seen) > 1:  # objectives that do not compare: the best of this job's own only
        mine = objective_of(record)
        best = best_so_far(sweep_dir, mine, records) if mine else None
        if best is not None:
            line += f" (best so far of {best[2]}: {best[1]:.4g}, job {best[0]})"
        return line
    best = best_so_far(sweep_dir, records=records)
    if best is not None:
        line += f" (best so far {best[1]:.4g}, job {best[0]})"
    return line


def config_lines(sweep_dir: Path, top: int = TOP) -> list[str]:
    """The first rows of configs.csv (best mean first) when some configuration has >= 2
    completed repeats: `0.9815 ± 0.0021 (n=3) tied  lr=0.003`; [] otherwise."""
    path = Path(sweep_dir) / "configs.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if _float(r.get("n")) >= 1]
    if not any(_float(r.get("n")) >= 2 for r in rows):
        return []
    lines = [f"best {min(top, len(rows))} of {len(rows)} configurations, mean ± 95% CI ({path}):"]
    for row in rows[:top]:
        half = (_float(row.get("ci_high")) - _float(row.get("ci_low"))) / 2
        spread = f" ± {half:.2g}" if math.isfinite(half) else ""
        mark = f" {row['mark']}" if row.get("mark") else ""
        n = int(_float(row.get("n")))
        value = f"{_float(row.get('mean')):.4g}{spread} (n={n}){mark}"
        lines.append(f"  {value}  {row.get('configuration')}")
    return lines


def _float(text: str | None) -> float:
    try:
        return float(text or "nan")
    except ValueError:
        return math.nan


def ranking_lines(sweep_dir: Path, top: int = TOP) -> list[str]:
    """The configurations (config_lines) when repeats were run, else the first rows of
    summary.csv (best first), one line each; for a sweep of several objectives
    (report.json's `objectives`), those of each objective's own report."""
    split = objective_lines(sweep_dir, top)
    if split is not None:
        return split
    by_config = config_lines(sweep_dir, top)
    if by_config:
        return by_config
    path = Path(sweep_dir) / "summary.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("status") == "completed"]
    lines = [f"best {min(top, len(rows))} of {len(rows)} completed jobs ({path}):"] if rows else []
    for row in rows[:top]:
        try:
            value = f"{float(row.get('objective') or 'nan'):.4g}"
        except ValueError:
            value = str(row.get("objective"))
        lines.append(f"  job {row.get('job')}: {value}  {row.get('overrides')}")
    return lines


def objective_lines(sweep_dir: Path, top: int = TOP) -> list[str] | None:
    """The ranking of each objective under a heading (report.json's `objectives`, written
    by objectives.py); None for a sweep of one objective."""
    try:
        found = json.loads((Path(sweep_dir) / "report.json").read_text()).get("objectives")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(found, list) or not found:
        return None
    lines = [f"{len(found)} objectives, each ranked on its own ({Path(sweep_dir) / 'summary.md'}):"]
    for k, entry in enumerate(found, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("dir"), str):
            continue
        by = " ".join(entry.get("set_by") or []) or "no override"
        lines.append(
            f"objective {k} of {len(found)}: {entry.get('objective')}, "
            f"{entry.get('direction')}d ({by}):"
        )
        ranked = ranking_lines(Path(sweep_dir) / entry["dir"], top)
        lines += [f"  {line}" for line in ranked or ["no completed job"]]
    return lines
