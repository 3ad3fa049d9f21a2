"""The new optimizers and EMA with the rest of the template, end to end (issue 16,
requirement 5): exact resume after kill -9, DDP on two CPU processes, the LR range test, and
the sweep a user types. `pytest -m slow`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from test_resume import EXACT, record_of, weights_hash

from conftest import ROOT, run_cli
from quick import QUICK
from trainlab.run import train

pytestmark = pytest.mark.slow

NEW = ["muon", "adamw_schedulefree", "lamb", "lars", "lion", "soap", "adopt"]
HELPERS = {"PYTHONPATH": str(ROOT / "tests")}


@pytest.mark.parametrize(
    "choice", ["optimizer=adamw_schedulefree", "optimizer=muon", "callbacks=ema"]
)
def test_killed_mid_epoch_resumes_to_exactly_the_same_result(choice, tmp_path):
    args = [*EXACT, choice, "lr=0.003"]
    unbroken = tmp_path / "unbroken"
    result = run_cli(*args, f"hydra.run.dir={unbroken}")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    killed = run_cli(  # after step 45: 5 steps after the step-40 checkpoint, mid-epoch
        *args,
        f"hydra.run.dir={run}",
        "+callbacks.kill._target_=kill_at_step.KillAtStep",
        "+callbacks.kill.step=45",
        env=HELPERS,
    )
    assert killed.returncode == -signal.SIGKILL
    resumed = run_cli(f"resume={run}", env=HELPERS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = record_of(run)
    assert record["trained"]["resumed_from"]["global_step"] == 40
    assert record["metrics"] == record_of(unbroken)["metrics"]  # to the last bit
    assert weights_hash(run) == weights_hash(unbroken)
    if choice == "callbacks=ema":  # the average and its count went on from the checkpoint
        saved, again = (
            torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (unbroken, run)
        )
        assert saved["averaging_state"]["n_averaged"] == again["averaging_state"]["n_averaged"]
        for name, value in saved["current_model_state"].items():
            assert torch.equal(value, again["current_model_state"][name]), name


def test_each_new_optimizer_trains_under_ddp_on_two_cpu_processes(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "trainer=ddp_cpu",
        f"optimizer={','.join(NEW)}",
        "batch_size=128",
        *QUICK,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert sorted(r["hparams"]["optimizer"] for r in records) == sorted(NEW)
    assert {r["status"] for r in records} == {"completed"}
    assert {r["plan"]["world_size"] for r in records} == {2}


def test_ema_under_ddp_saves_the_average(tmp_path):
    run = tmp_path / "run"
    result = run_cli(
        "trainer=ddp_cpu", "callbacks=ema", *QUICK, "logger=none", f"hydra.run.dir={run}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = record_of(run)
    assert record["trained"]["evaluated_weights"]["averaged"] == "ema"
    best = torch.load(record["trained"]["best_checkpoint"], weights_only=True)
    assert "current_model_state" in best


@pytest.mark.parametrize(
    "choice", [f"optimizer={name}" for name in NEW] + ["callbacks=ema"], ids=lambda c: c
)
def test_the_lr_range_test_tunes_each_new_optimizer(compose_in, choice):
    cfg = compose_in(
        choice,
        "tune=lr",
        "tune.lr.num_training=30",
        "max_epochs=1",
        "logger=none",
        *(["callbacks=none"] if choice != "callbacks=ema" else []),
    )
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "completed"
    tuned = record["plan"]["tuned"]["lr"]
    used = tuned["used"]
    lrs = [g["lr"] for g in record["trained"]["optimizer"]["param_groups"]]
    assert lrs == [pytest.approx(used)] * len(lrs)


def test_the_optimizer_sweep_of_the_readme_runs_and_is_ranked(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "optimizer=adamw,muon,lion,adamw_schedulefree",
        "lr=1e-3,3e-3",
        *QUICK,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(records) == 8 and {r["status"] for r in records} == {"completed"}
    assert len((sweep / "summary.csv").read_text().strip().splitlines()) == 9
