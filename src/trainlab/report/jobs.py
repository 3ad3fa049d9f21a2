"""One job directory of a sweep as one row of the summary: what was overridden, what came out.

A file that cannot be read (missing, empty, truncated, not JSON/YAML, binary, of the wrong
shape, not permitted) never stops the report: the row keeps what could be read and the
`unreadable` column says which file failed and why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from trainlab.report import pruned as pruning

# how rows are ordered below the completed ones (which go by objective); pruned trials come
# next, in job order: a partial result is not ranked against final ones
STATUS_ORDER = {
    "completed": 0,
    "pruned": 1,
    "diverged": 2,
    "failed": 3,
    "interrupted": 4,
    "debug": 5,  # a debug mode ran: listed, never ranked (it has no objective)
    "running": 6,
    "unfinished": 7,
    "unreadable": 8,
    "never ran": 9,
}
RECORDED = ("running", "completed", "pruned", "diverged", "failed", "interrupted", "debug")
OVERRIDES = Path(".hydra") / "overrides.yaml"
RECORD = "metrics.json"


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Jobs that have started: sub-directories where Hydra saved the job's config (.hydra/)
    or the job wrote its record, in job-number order."""
    found = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and not p.name.startswith(".")]
    jobs = [p for p in found if (p / ".hydra").is_dir() or (p / RECORD).exists()]
    return sorted(jobs, key=lambda p: (len(p.name), p.name))


def override_value(text: str) -> Any:
    """A value as typed on the command line: YAML reads `1e-05` (Hydra's spelling of 1e-5)
    as a string, so numbers get a second chance as floats."""
    try:
        value = yaml.safe_load(text) if text else text
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def overrides_row(overrides: list[str]) -> dict[str, Any]:
    """The overrides as columns: `lr=0.01` -> lr: 0.01; `_overrides`: the list itself (a
    tuple), which the configurations of the report group by (configs.py)."""
    row: dict[str, Any] = {"overrides": " ".join(overrides), "_overrides": tuple(overrides)}
    for override in overrides:
        key, _, value = override.partition("=")
        row[key.lstrip("+~")] = override_value(value)
    return row


def why_unreadable(err: BaseException, text: str | None = None) -> str:
    if isinstance(err, FileNotFoundError):
        return "missing"
    if isinstance(err, UnicodeDecodeError):
        return "not text (binary data)"
    if isinstance(err, OSError):
        return err.strerror or type(err).__name__
    if isinstance(err, json.JSONDecodeError):
        if text is not None and not text.strip():
            return "empty"
        return f"not valid JSON ({err.msg}, line {err.lineno} column {err.colno}): truncated?"
    if isinstance(err, yaml.YAMLError):
        return f"not valid YAML ({str(err).splitlines()[0]})"
    return f"{type(err).__name__}: {err}"


def read_overrides(job: Path) -> tuple[list[str] | None, str | None]:
    """(the job's overrides, None), or (None, why they cannot be read)."""
    text = None
    try:
        text = (job / OVERRIDES).read_text()
        overrides = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return None, why_unreadable(err, text)
    if overrides is None:
        return [], None  # a job without overrides
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return None, f"not a list of overrides (a {type(overrides).__name__})"
    return overrides, None


def read_record(job: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the job's record, None); (None, None) when it has none yet; (None, why) when it
    cannot be read or is no record of this template."""
    path = job / RECORD
    if not path.exists() and not path.is_symlink():
        return None, None
    text = None
    try:
        text = path.read_text()
        record = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, why_unreadable(err, text)
    if not isinstance(record, dict):
        return None, f"not a JSON object (a {type(record).__name__})"
    if record.get("status") not in RECORDED:
        return None, f"status is {record.get('status')!r}, not one of {', '.join(RECORDED)}"
    return record, None


def number(value: Any) -> float | None:
    """A finite number, or None (records write NaN and inf as strings)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def mapping(record: dict[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    value = record.get(key) or {}
    if isinstance(value, dict):
        return value
    problems.append(f"{RECORD}: `{key}` is not an object")
    return {}


def run_length(trained: dict[str, Any]) -> tuple[Any, Any, int | None]:
    """(epochs, optimizer steps, folds): a cross-validation job's (`trained.folds`, one
    record per fold) are the mean per fold over all its folds, so that it compares with a
    job that trained once; folds is None for a job that did not cross-validate."""
    folds = trained.get("folds")
    if not isinstance(folds, list) or not folds:
        return trained.get("epochs"), trained.get("optimizer_steps"), None
    fits = [f for f in folds if isinstance(f, dict)]

    def mean(key: str) -> float | int | None:
        values = [v for f in fits if (v := number(f.get(key))) is not None]
        if not values:
            return None
        value = sum(values) / len(values)
        return int(value) if value.is_integer() else round(value, 2)

    cv = trained.get("cv") if isinstance(trained.get("cv"), dict) else {}
    k = cv.get("folds") if isinstance(cv.get("folds"), int) else len(folds)
    return mean("epochs"), mean("optimizer_steps"), k


def read_job(job: Path, jobs_ended: bool = False) -> dict[str, Any]:
    """One row of the summary. `jobs_ended`: the sweep's jobs have all stopped (the report is
    written as the sweep process exits), so a job still `running` was interrupted."""
    problems: list[str] = []
    row: dict[str, Any] = {"job": job.name, "overrides": None}
    overrides, problem = read_overrides(job)
    if problem:
        problems.append(f"{OVERRIDES}: {problem}")
    else:
        row.update(overrides_row(overrides))
    if overrides is None:
        row["overrides"] = "(unreadable)"
    record, problem = read_record(job)
    if problem:
        problems.append(f"{RECORD}: {problem}")
        return {**row, "status": "unreadable", "unreadable": "; ".join(problems)}
    if record is None:
        row["status"] = "unfinished"
        if jobs_ended:
            row.update(status="interrupted", error="it stopped before it wrote its record")
        return {**row, "unreadable": "; ".join(problems) or None}
    metrics = mapping(record, "metrics", problems)
    trained = mapping(record, "trained", problems)
    trial = mapping(record, "optuna", problems).get("trial")
    pruned = mapping(record, "pruned", problems) if record["status"] == "pruned" else None
    row.update(mapping(record, "hparams", problems))  # typed as the run saw them
    epochs, steps, k = run_length(trained)
    status = record["status"]
    error = record.get("error")
    if status == "running" and jobs_ended:
        status = "interrupted"
        error = error or "its process ended while it trained (killed, or stopped with the sweep)"
    row.update(
        status=status,
        objective=number(record.get("objective")),
        optimized_metric=record.get("optimized_metric"),
        direction=record.get("direction"),  # none: the sweep's (summarize)
        epochs=epochs,
        steps=steps,
        duration_s=number(record.get("duration_s")),
        error=error,
        unreadable="; ".join(problems) or None,
    )
    if k is not None:
        row["cv_folds"] = k
    if trial is not None:
        row["trial"] = trial  # the Optuna trial number, as optuna-dashboard shows it
    if pruned is not None:
        row.update(
            objective=None,  # no final value: the pruner stopped it
            reached=pruning.reached(pruned),
            reached_value=pruning.value_then(pruned),
            pruned_metric=pruned.get("metric"),
        )
        return row  # its metrics are partial: no cv mean or test result beside final ones
    cv = trained.get("cv") if isinstance(trained.get("cv"), dict) else {}
    if "cv/mean" in metrics or cv:
        row["cv_mean"] = number(metrics.get("cv/mean", cv.get("mean")))
        row["cv_std"] = number(metrics.get("cv/std", cv.get("std")))
    row.update({name: number(v) for name, v in metrics.items() if name.startswith("test/")})
    return row
