"""One job directory of a sweep as one row of the summary: what was overridden, what came out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

STATUS_ORDER = {"completed": 0, "diverged": 1, "failed": 2, "unfinished": 3}


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
