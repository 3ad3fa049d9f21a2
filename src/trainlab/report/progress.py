"""What a sweep says on the console: one line per finished job, and the top of the ranking at
the end, so that a SLURM log or a terminal tells how the sweep goes without opening a file.

    job 3/6 lr=0.003 seed=1: completed, val/acc_best 0.9815 (best so far 0.9852, job 1)
    job 4/6 lr=0.1 seed=1: pruned at epoch 4 (val/acc 0.91) (best so far 0.9852, job 1)

Everything is read from the jobs' records, so it works in the sweep process and in a job's
own process (hydra/launcher=joblib) alike.
"""

from __future__ import annotations

import csv
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


def best_so_far(sweep_dir: Path) -> tuple[str, float, str] | None:
    """(job, objective, metric) of the best completed job of the sweep so far, by the
    direction its records give (maximize only where none says)."""
    best = None
    records = [(job, read_record(job)[0]) for job in job_dirs(sweep_dir)]
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
    best = best_so_far(sweep_dir)
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
    summary.csv (best first), one line each."""
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
