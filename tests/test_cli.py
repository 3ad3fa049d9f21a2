"""`python train.py ...` as a user types it: run directory, metrics.json, --help.

Bad input: test_bad_inputs.py."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import cli_env, run_cli, train_cmd

RUN_DIR = re.compile(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}_[0-9a-f]{6}$")


def run_dirs(project: Path, task: str = "train") -> list[Path]:
    return sorted(p.parent for p in (project / "outputs" / task).glob("*/*/.hydra"))


def cli_in(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run train.py with `project` as the project root, so outputs/ lands there."""
    return run_cli(*args, project=project, **kwargs)


def completed_run(project: Path, task: str, *args: str, timeout: float = 300):
    """`python train.py <args>` must succeed with exactly one run directory of `task` under
    `project`, whose metrics.json says completed: returns that directory and the record."""
    result = cli_in(project, *args, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(project, task=task)
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    return run, record


def test_adam_lr_0001_trains_what_it_says(tmp_path):
    run, record = completed_run(tmp_path, "train", "optimizer=adam", "lr=0.001")
    assert RUN_DIR.search(run.as_posix()), run
    assert record["optimized_metric"] == "val/acc_best"
    assert record["objective"] == record["metrics"]["val/acc_best"]
    assert record["hparams"]["optimizer"] == "adam" and record["hparams"]["lr"] == 0.001
    assert record["metrics"]["test/acc"] >= 0.97  # the template's quality bar on digits
    assert record["duration_s"] > 0
    assert record["trained"]["throughput"]["device/samples_per_sec"] > 0  # ThroughputMonitor
    # what actually trained, as built in configure_optimizers ...
    assert record["trained"]["optimizer"]["class"] == "Adam"
    assert {g["lr"] for g in record["trained"]["optimizer"]["param_groups"]} == {0.001}
    # ... and as Lightning's LearningRateMonitor logged it during training
    with open(run / "csv" / "metrics.csv") as f:
        logged = [row["lr-Adam"] for row in csv.DictReader(f) if row.get("lr-Adam")]
    assert logged and {float(v) for v in logged} == {0.001}

    assert (run / ".hydra" / "config.yaml").exists() and (
        run / ".hydra" / "overrides.yaml"
    ).exists()
    assert (run / "train.log").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert Path(record["trained"]["best_checkpoint"]).parent == run / "checkpoints"
    assert not list(run.glob(".metrics.json.*"))  # no temp file left behind


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_two_runs_started_together_get_their_own_directories(tmp_path):
    cmd = train_cmd("debug=fdr", "logger=none")
    procs = [
        subprocess.Popen(
            cmd, env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = run_dirs(tmp_path, task="debug")
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


def test_help_lists_every_group_and_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for line in [
        "optimizer: adafactor, adagrad, adam, adamw, nadam, radam, rmsprop, sgd, sgd_momentum, "
        "sgd_nesterov",
        "scheduler: constant_warmup, cosine, exponential, inverse_sqrt, multistep, none, "
        "onecycle, plateau, step, warmup_cosine, warmup_linear, wsd",
        "tune: all, batch_size, lr, none",
        "hparams_search: optuna",
        "trainer: cpu, ddp, ddp_cpu, default, fsdp, gpu, mps",
        "model: cnn, gpt, mlp",
        "data: digits, text",
        "logger: csv, many, mlflow, none, tensorboard, wandb",
        "debug: fdr, limit, overfit, profiler",
    ]:
        assert line in result.stdout
    assert "lr, weight_decay, weight_decay_groups, batch_size" in result.stdout
