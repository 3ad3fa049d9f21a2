"""Longer end-to-end runs: `pytest -m slow`."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from test_cli import cli_in, run_dirs

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf/experiment").glob("*")))
def test_worked_examples_reach_their_accuracy(experiment, tmp_path):
    result = cli_in(tmp_path, f"experiment={experiment}", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path, task=experiment)
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["metrics"]["test/acc"] >= 0.97


def test_ddp_on_two_cpu_processes_writes_one_verdict(tmp_path):
    result = cli_in(tmp_path, "trainer=ddp_cpu", "batch_size=512", "debug=limit", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path, task="debug")
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    plan = record["plan"]  # 2 processes x 256, no accumulation
    assert (plan["world_size"], plan["micro_batch_size"], plan["accumulate_grad_batches"]) == (
        2,
        256,
        1,
    )
    assert (run / "train_ddp_process_1.log").exists()  # the second rank really ran
    assert len(list((tmp_path / "outputs").glob("**/metrics.json"))) == 1
