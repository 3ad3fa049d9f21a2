"""A sweep on the console (issue 13): one line per finished job with the best so far, and the
top of the ranking at the end (trainlab.report.progress)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from trainlab.report.progress import best_so_far, job_line


def job(sweep: Path, num: int, status: str, objective, direction="minimize", error=None) -> Path:
    path = sweep / str(num)
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"lr={num}"]))
    record = {"status": status, "objective": objective, "optimized_metric": "val/loss_best"}
    record.update(direction=direction, **({"error": error} if error else {}))
    (path / "metrics.json").write_text(json.dumps(record))
    return path


def test_the_job_line_names_the_job_its_outcome_and_the_best_so_far(tmp_path):
    job(tmp_path, 0, "completed", 0.5)
    job(tmp_path, 1, "completed", 0.3)
    diverged = job(tmp_path, 2, "diverged", 1e9, error="diverged at step 4 with lr=2")
    (tmp_path / "3").mkdir()  # started, no record yet: not counted
    assert best_so_far(tmp_path) == ("1", 0.3, "val/loss_best")  # minimized: the lowest
    line = job_line(tmp_path, tmp_path / "1", ["lr=1"])
    assert line == "job 1 lr=1: completed, val/loss_best 0.3 (best so far 0.3, job 1)"
    line = job_line(tmp_path, diverged, ["lr=2"])
    assert line.startswith("job 2 lr=2: diverged: diverged at step 4 with lr=2")
    assert line.endswith("(best so far 0.3, job 1)")
    assert job_line(tmp_path, tmp_path / "3", ["lr=3"]) == (
        "job 3 lr=3: no record (best so far 0.3, job 1)"
    )


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_a_sweep_prints_a_line_per_job_and_the_ranking_at_the_end(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "lr=0.001,0.01", "max_epochs=1", "trainer.limit_train_batches=3"]
    result = run_cli(*args, "logger=none", f"hydra.sweep.dir={sweep}", project=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    records = [json.loads((sweep / j / "metrics.json").read_text()) for j in ("0", "1")]
    best = max(range(2), key=lambda i: records[i]["objective"])
    for i in range(2):
        assert f"job {i}/2 lr={(0.001, 0.01)[i]} " in output
        assert f"val/acc_best {records[i]['objective']:.4g}" in output
    assert "best 2 of 2 completed jobs" in output
    top = output[output.index("best 2 of 2 completed jobs") :].splitlines()[1]
    assert f"job {best}: {records[best]['objective']:.4g}" in top
