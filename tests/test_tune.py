"""tune=lr, tune=batch_size and tune=all on the CPU, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT
from trainlab.checks import ConfigError
from trainlab.run import train


def run(compose_in, *overrides):
    cfg = compose_in("logger=none", "callbacks=none", "max_epochs=1", *overrides)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    return out, json.loads((out / "metrics.json").read_text())


def test_lr_range_test_sets_the_lr_that_trains(compose_in):
    out, record = run(compose_in, "tune=lr", "tune.lr.num_training=40")
    suggested = record["plan"]["tuned"]["lr_suggested"]
    assert 1e-6 < suggested < 1.0
    assert record["plan"]["lr_effective"] == suggested
    assert [g["lr"] for g in record["trained"]["optimizer"]["param_groups"]] == [
        pytest.approx(suggested)
    ]
    assert (out / "lr_find.png").exists()
    import pandas as pd

    table = pd.read_csv(out / "lr_find.csv")
    assert list(table.columns) == ["lr", "loss"] and len(table) > 10
    stray = (
        list(out.glob(".lr_find*"))
        + list(ROOT.glob(".lr_find*"))
        + list(Path.cwd().glob(".lr_find*"))
    )
    assert not stray


def test_batch_size_finder_on_cpu_measures_throughput_and_keeps_the_global_batch(compose_in):
    _, record = run(
        compose_in, "tune=batch_size", "batch_size=64", "tune.batch_size.measure_samples=128"
    )
    plan = record["plan"]
    measured = plan["tuned"]["batch_size"]
    assert measured["method"] == "cpu throughput"
    assert set(measured["samples_per_s"]) == {"4", "8", "16", "32", "64"}
    chosen = plan["micro_batch_size"]
    assert chosen == measured["micro_batch_size"] and 64 % chosen == 0
    best = max(measured["samples_per_s"].values())
    assert measured["samples_per_s"][str(chosen)] >= 0.95 * best
    assert plan["batch_size"] == 64 and plan["accumulate_grad_batches"] == 64 // chosen


def test_tune_all_does_batch_size_then_lr(compose_in):
    _, record = run(
        compose_in, "tune=all", "tune.lr.num_training=30", "tune.batch_size.measure_samples=64"
    )
    assert {"batch_size", "lr_suggested"} <= set(record["plan"]["tuned"])


def test_tuning_refuses_a_multi_device_run(compose_in):
    cfg = compose_in("logger=none", "callbacks=none", "tune=lr", "trainer=ddp_cpu")
    with pytest.raises(ConfigError, match="runs on one device"):
        train(cfg)


def test_lr_range_test_cut_short_says_why(compose_in):
    cfg = compose_in("logger=none", "callbacks=none", "tune=lr", "debug=limit")
    with pytest.raises(ConfigError, match="ran only 6 of tune.lr.num_training=100 steps"):
        train(cfg)
