"""tune=lr, tune=batch_size and tune=all on the CPU, end to end; an LR range test that
cannot be trusted falls back to the configured lr (or is refused), never a silent guess."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from quick import QUICK
from trainlab.checks import ConfigError
from trainlab.run import train
from trainlab.tune import (
    LIGHTNING_SMOOTHING,
    judge_range_test,
    range_test_steps,
    steepest_descent,
    unbiased_losses,
)

SETTINGS = {
    "min_lr": 1e-6,
    "max_lr": 1.0,
    "num_training": 100,
    "mode": "exponential",
    "early_stop_threshold": 4.0,
    "min_descent": 0.1,
    "on_failure": "fallback",
}


def run(compose_in, *overrides):
    cfg = compose_in("logger=none", "callbacks=none", "max_epochs=1", *overrides)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    return out, json.loads((out / "metrics.json").read_text())


def test_lr_range_test_sets_the_lr_that_trains(compose_in):
    out, record = run(compose_in, "tune=lr", "tune.lr.num_training=40")
    suggested = record["plan"]["tuned"]["lr_suggested"]
    assert 1e-6 < suggested < 1.0
    measured = record["plan"]["tuned"]["lr"]
    assert measured["used"] == suggested and "fallback" not in measured
    assert measured["descent"] >= 0.1 and suggested < measured["min_at_lr"]
    assert record["plan"]["lr_effective"] == suggested
    assert [g["lr"] for g in record["trained"]["optimizer"]["param_groups"]] == [
        pytest.approx(suggested)
    ]
    assert (out / "lr_find.png").exists()
    table = pd.read_csv(out / "lr_find.csv")
    assert list(table.columns) == ["step", "lr", "loss"] and len(table) > 10
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


LR_RUN = ["tune=lr", "tune.lr.max_lr=0.01", "tune.lr.num_training=60"]  # no divergence


@pytest.mark.parametrize(
    "overrides",
    [
        ["max_epochs=1"],  # 19 steps an epoch
        ["max_epochs=2", *QUICK],  # 3 batches an epoch
        ["max_epochs=1", "micro_batch_size=32"],  # accumulation 2
    ],
    ids=["one epoch", "limit_train_batches", "accumulation"],
)
def test_lr_range_test_runs_all_its_steps_whatever_max_epochs(compose_in, overrides):
    out, record = run(compose_in, *LR_RUN, *overrides)
    measured = record["plan"]["tuned"]["lr"]
    accumulation = record["plan"]["accumulate_grad_batches"]
    assert not measured["diverged"]
    assert measured["steps"] >= 60 - (accumulation > 1)  # one step may leave no point
    assert pd.read_csv(out / "lr_find.csv")["step"].iloc[-1] + 1 == measured["steps"]
    max_epochs = int(next(o for o in overrides if "max_epochs" in o).split("=")[1])
    assert record["trained"]["epochs"] == max_epochs  # the run's own max_epochs is back


def test_a_flat_lr_range_test_falls_back_to_the_configured_lr(compose_in, caplog):
    with caplog.at_level(logging.WARNING, logger="trainlab.tune"):
        out, record = run(
            compose_in,
            "tune=lr",
            "tune.lr.min_lr=1e-7",
            "tune.lr.max_lr=1e-6",
            "tune.lr.num_training=30",
        )
    assert record["status"] == "completed"
    plan = record["plan"]
    assert "never fell by tune.lr.min_descent=0.1" in plan["tuned"]["lr"]["fallback"]
    assert "lr_suggested" not in plan["tuned"]
    assert plan["lr_effective"] == plan["tuned"]["lr"]["used"] == 0.001
    assert [g["lr"] for g in record["trained"]["optimizer"]["param_groups"]] == [0.001]
    assert any("cannot be trusted" in r.getMessage() for r in caplog.records)
    # the curve without Lightning's start-up bias is flat from its first point (a pin on
    # LIGHTNING_SMOOTHING and on the step Lightning corrects by)
    table = pd.read_csv(out / "lr_find.csv")
    assert list(table["step"]) == list(range(30))
    assert table["loss"].iloc[0] == pytest.approx(table["loss"].iloc[-1], rel=0.02)


def test_a_range_that_ends_while_the_loss_falls_steepest_falls_back(compose_in):
    _, record = run(compose_in, "tune=lr", "tune.lr.max_lr=1e-3")
    fallback = record["plan"]["tuned"]["lr"]["fallback"]
    assert "is the last lr of the range" in fallback and "raise tune.lr.max_lr" in fallback
    assert record["plan"]["lr_effective"] == 0.001


def test_refuse_mode_stops_with_one_paragraph_before_training(compose_in):
    cfg = compose_in(
        "logger=none",
        "callbacks=none",
        "tune=lr",
        "tune.lr.min_lr=1e-7",
        "tune.lr.max_lr=1e-6",
        "tune.lr.num_training=20",
        "tune.lr.on_failure=refuse",
    )
    with pytest.raises(ConfigError) as refused:
        train(cfg)
    message = str(refused.value)
    assert "\n" not in message
    assert "the LR range test cannot be trusted: the smoothed loss never fell" in message
    assert "tune.lr.on_failure=fallback" in message and "lr_find.png" in message
    out = Path(cfg.paths.output_dir)
    assert (out / "lr_find.png").exists()
    assert json.loads((out / "metrics.json").read_text())["status"] == "failed"
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize(
    "override, named",
    [
        ("tune.lr.on_failure=maybe", "tune.lr.on_failure"),
        ("tune.lr.min_descent=-0.1", "tune.lr.min_descent"),
        ("tune.lr.max_lr=1e-7", "tune.lr.max_lr=1e-07 must be above tune.lr.min_lr"),
        ("tune.lr.num_training=5", "tune.lr.num_training"),
        ("tune.lr.mode=cosine", "tune.lr.mode"),
    ],
)
def test_lr_range_test_settings_that_cannot_work_are_refused(compose_in, override, named):
    cfg = compose_in("logger=none", "callbacks=none", "tune=lr", override)
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(".", r"\.")):
        train(cfg)


def lightning_smoothed(raw: list[float], steps: list[int]) -> list[float]:
    """What Lightning 2.6's LR finder records: a moving average divided by 1 - beta^(step + 2)."""
    beta, avg, out = LIGHTNING_SMOOTHING, 0.0, []
    for loss, step in zip(raw, steps, strict=True):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (step + 2)))
    return out


def test_unbiased_losses_undo_lightnings_start_up_bias():
    steps = list(range(40))
    recorded = lightning_smoothed([2.3] * 40, steps)
    assert recorded[0] == pytest.approx(2.3 / 1.98)  # half the loss at the start
    assert unbiased_losses(recorded, steps) == pytest.approx([2.3] * 40)
    # a step that ends an epoch mid-accumulation leaves no point: the steps say so
    gappy = [0, 1, 2, 4, 5, 6, 8]
    assert unbiased_losses(lightning_smoothed([1.0] * 7, gappy), gappy) == pytest.approx([1.0] * 7)


def test_range_test_steps_read_back_from_the_lr():
    n, lo, hi = 50, 1e-6, 1.0
    # Lightning's schedulers: step 0 at min_lr, step s >= 1 at (s + 1) / n of the range
    lrs = [lo] + [lo * (hi / lo) ** ((s + 1) / n) for s in range(1, n)]
    settings = {**SETTINGS, "num_training": n}
    assert range_test_steps(lrs, settings) == list(range(n))
    linear = [lo] + [lo + (s + 1) / n * (hi - lo) for s in range(1, n)]
    assert range_test_steps(linear, {**settings, "mode": "linear"}) == list(range(n))


def curve(n: int = 60) -> tuple[list[float], list[float]]:
    """A loss flat at 2.3 with a little noise at small lrs, falling from 1e-3 to a minimum
    of 1.3 at 3e-2, then blowing up."""
    lrs = [1e-6 * 1e6 ** (i / (n - 1)) for i in range(n)]
    losses = []
    for i, lr in enumerate(lrs):
        x = math.log10(lr)
        fall = 1.0 / (1 + math.exp(-3 * (x + 2.25)))  # 0 below 1e-3, 1 above 3e-2
        rise = max(0.0, x + 1.5) * 6
        losses.append(2.3 - fall + rise + (0.004 if i % 2 else -0.004) * (x < -4))
    return lrs, losses


def test_the_suggestion_is_the_steepest_descent_against_log_lr_not_noise():
    lrs, losses = curve()
    index = steepest_descent(lrs, losses, "exponential")
    assert 1e-3 < lrs[index] < 3e-2  # on the descent, not in the noise at 1e-5
    failure, measured = judge_range_test(
        lrs, losses, list(range(60)), index, True, {**SETTINGS, "num_training": 60}
    )
    assert failure is None and measured["descent"] > 0.3


@pytest.mark.parametrize(
    "case, expected",
    [
        ("flat", "never fell by tune.lr.min_descent=0.1"),
        ("after the minimum", "at or after the loss minimum"),
        ("at the end", "is the last lr of the range"),
        ("cut short", "ran only 40 of tune.lr.num_training=60 steps without diverging"),
        ("no point", "it recorded no step"),
    ],
)
def test_range_tests_that_cannot_be_trusted_say_why(case, expected):
    lrs, losses = curve()
    steps, index, diverged = list(range(60)), 30, True
    if case == "flat":
        losses = [2.3 + 0.001 * (i % 3) for i in range(60)]
    elif case == "after the minimum":
        index = losses.index(min(losses)) + 2
    elif case == "at the end":
        lrs, losses, steps = lrs[:35], [2.3 - 0.02 * i for i in range(35)], steps[:35]
        index = 33
    elif case == "cut short":
        lrs, losses, steps, diverged = lrs[:40], losses[:40], steps[:40], False
    else:
        lrs, losses, steps, index = [], [], [], None
    failure, _ = judge_range_test(
        lrs, losses, steps, index, diverged, {**SETTINGS, "num_training": 60}
    )
    assert failure is not None and expected in failure
