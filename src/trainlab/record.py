"""The run's verdict, `metrics.json`: written once, last, atomically, by rank 0 only.

A reader (a person, a sweeper, a report) sees either the old file or the new one, never
half of one, and a run that did not finish never says "completed".
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from trainlab.rundir import METRICS_FILE


def worst_objective(direction: str) -> float:
    """What a diverged or failed job reports: finite (Optuna needs a number), and worse than
    any real value of a metric such as accuracy or loss."""
    return -1e9 if direction == "maximize" else 1e9


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plain_number(value: Any) -> float | None:
    """A tensor or number as a JSON-safe float; NaN and inf become None."""
    value = float(value.item() if hasattr(value, "item") else value)
    return value if math.isfinite(value) else None


@rank_zero_only
def write_metrics(
    output_dir: Path,
    *,
    status: str,
    objective: float | None,
    optimized_metric: str,
    direction: str,
    metrics: dict[str, Any],
    hparams: dict[str, Any],
    duration_s: float,
    **extra: Any,
) -> Path:
    path = Path(output_dir) / METRICS_FILE
    record = {
        "status": status,
        "objective": objective,
        "optimized_metric": optimized_metric,
        "direction": direction,
        "metrics": {name: plain_number(v) for name, v in sorted(metrics.items())},
        "hparams": hparams,
        "duration_s": round(duration_s, 3),
        **extra,
    }
    write_json_atomic(path, record)
    return path
