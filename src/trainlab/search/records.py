"""A job's `metrics.json` as the sweep sees it, and the record of a job whose process died.

A job writes its own record (trainlab.run.train); the sweep only reads it, except when the
job's process died before it could write its verdict (kill -9, the out-of-memory killer, a
crash in native code): then the sweep writes `failed` with the cause, keeping whatever the
job had recorded (its plan, its hyperparameters).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from trainlab.record import write_json_atomic
from trainlab.rundir import METRICS_FILE

FINISHED = ("completed", "pruned", "diverged", "failed", "interrupted", "debug")


def read_record(job_dir: Path | str | None) -> dict[str, Any] | None:
    """The job's record, or None when there is none or it cannot be read as a JSON object."""
    if job_dir is None:
        return None
    try:
        record = json.loads((Path(job_dir) / METRICS_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def death_cause(returncode: int) -> str:
    """What a worker's exit status says about how it died."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = " (kill -9, or the out-of-memory killer)" if -returncode == signal.SIGKILL else ""
        return f"the worker process running this job died: killed by {name}{why}"
    return (
        f"the worker process running this job died: it exited with code {returncode} before "
        "the job returned (its error, if Python's, is printed above; else a crash in native "
        "code, or os._exit)"
    )


def mark_dead(job_dir: Path, cause: str, returncode: int) -> dict[str, Any]:
    """Record the job `failed` with `cause`, unless it had already written its verdict (it died
    after that, while exiting). Returns the record as it now is."""
    job_dir = Path(job_dir)
    record = read_record(job_dir) or {}
    if record.get("status") in FINISHED:
        return record
    checkpoint = job_dir / "checkpoints" / "last.ckpt"
    if checkpoint.exists():
        cause += f"; its last checkpoint is kept: continue it with python train.py resume={job_dir}"
    record.update(status="failed", objective=None, error=cause, worker_exit_code=returncode)
    write_json_atomic(job_dir / METRICS_FILE, record)
    return record
