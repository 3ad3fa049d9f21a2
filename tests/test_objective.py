"""One objective, declared once (issue 11, part 2): optimized_metric and its direction drive
the best checkpoint's monitor and mode, early stopping, the best-so-far, the sweeper's
direction and the record; a contradiction given explicitly is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from trainlab.checks import ConfigError
from trainlab.config_checks import check_config
from trainlab.objective import implied_direction, monitor_mode, monitor_of, objective_direction
from trainlab.run import train

DIRECTIONS = [
    ("val/acc_best", "auto", "maximize"),
    ("val/loss_best", "auto", "minimize"),
    ("val/mse", "auto", "minimize"),
    ("test/top1_error", "auto", "minimize"),
    ("val/bpb", "auto", "minimize"),
    ("val/perplexity_best", "auto", "minimize"),
    ("val/f1_best", "auto", "maximize"),
    ("val/top1_error", "auto", "minimize"),  # a smaller-is-better word wins
    ("val/custom_best", "auto", "maximize"),
    ("val/custom_best", "minimize", "minimize"),  # the name says nothing: the user decides
    ("val/acc", "maximize", "maximize"),
    ("val/loss", "minimize", "minimize"),
]


@pytest.mark.parametrize(("metric", "given", "direction"), DIRECTIONS)
def test_the_direction_follows_the_name_unless_given(metric, given, direction):
    assert objective_direction(metric, given) == direction


CONTRADICTIONS = [
    ("val/loss_best", "maximize"),
    ("val/mse", "maximize"),
    ("test/error", "maximize"),
    ("val/bpb", "maximize"),
    ("val/acc_best", "minimize"),
    ("val/f1", "minimize"),
    ("test/auroc", "minimize"),
]


@pytest.mark.parametrize(("metric", "given"), CONTRADICTIONS)
def test_a_direction_against_the_name_is_refused(metric, given):
    with pytest.raises(ConfigError, match=f"optimized_metric={metric} with optimized_direction"):
        objective_direction(metric, given)


def test_monitor_and_mode_of_an_objective():
    assert monitor_of("val/acc_best") == "val/acc"
    assert monitor_of("test/loss") == "val/loss"
    assert monitor_of("val/acc") == "val/acc"
    assert monitor_mode("val/acc", "val/acc_best", "auto") == "max"
    assert monitor_mode("val/loss", "val/acc_best", "auto") == "min"  # by its own name
    assert monitor_mode("val/custom", "val/custom_best", "minimize") == "min"  # the objective's
    assert implied_direction("val/accuracy") == "maximize"
    assert implied_direction("val/custom") is None


# (overrides, the checkpoint's monitor and mode, early stopping's, the Optuna direction)
COMPOSED = [
    ([], "val/acc", "max", "val/acc", "max", "maximize"),
    (["optimized_metric=val/loss_best"], "val/loss", "min", "val/loss", "min", "minimize"),
    (["optimized_metric=test/loss"], "val/loss", "min", "val/loss", "min", "minimize"),
    (
        ["callbacks.early_stopping.monitor=val/loss"],
        "val/acc",
        "max",
        "val/loss",
        "min",
        "maximize",
    ),
    (["experiment=gpt_small"], "val/loss", "min", "val/loss", "min", "minimize"),
]


@pytest.mark.parametrize(
    ("overrides", "ckpt_monitor", "ckpt_mode", "es_monitor", "es_mode", "direction"), COMPOSED
)
def test_callbacks_and_sweeper_follow_the_objective(
    compose_in, overrides, ckpt_monitor, ckpt_mode, es_monitor, es_mode, direction
):
    cfg = compose_in("callbacks=early_stopping", "hparams_search=optuna", *overrides)
    check_config(cfg, list(cfg.hydra.overrides.task), list(cfg.hydra.runtime.choices))
    assert (cfg.callbacks.checkpoint.monitor, cfg.callbacks.checkpoint.mode) == (
        ckpt_monitor,
        ckpt_mode,
    )
    assert (cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode) == (
        es_monitor,
        es_mode,
    )
    assert cfg.hydra.sweeper.direction == direction


@pytest.mark.parametrize(("monitor", "mode"), [("val/loss", "min"), ("val/acc", "max")])
def test_the_plateau_scheduler_follows_its_monitor(compose_in, monitor, mode):
    cfg = compose_in("scheduler=plateau", f"scheduler.monitor={monitor}")
    check_config(cfg, list(cfg.hydra.overrides.task), list(cfg.hydra.runtime.choices))
    assert cfg.scheduler.factory.mode == mode


REFUSED = [
    (["optimized_metric=val/loss_best", "optimized_direction=maximize"], "contradicts itself"),
    (["callbacks.checkpoint.mode=min"], "callbacks.checkpoint.mode=min with monitor=val/acc"),
    (["callbacks.checkpoint.monitor=val/loss"], "callbacks.checkpoint.monitor=val/loss chooses"),
    (
        ["optimized_metric=val/loss_best", "callbacks.checkpoint.mode=max"],
        "callbacks.checkpoint.mode=max with monitor=val/loss",
    ),
    (
        ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/loss"]
        + ["callbacks.early_stopping.mode=max"],
        "callbacks.early_stopping.mode=max",
    ),
    (["optimized_direction=upward"], "optimized_direction='upward' is not allowed"),
    (["callbacks.checkpoint.monitor=null"], "callbacks.checkpoint.monitor=null would make"),
    (
        ["scheduler=plateau", "scheduler.monitor=val/acc", "scheduler.factory.mode=min"],
        "scheduler.factory.mode=min with monitor=val/acc",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_settings_that_contradict_the_objective_are_refused(compose_in, overrides, message):
    cfg = compose_in(*overrides)
    with pytest.raises(ConfigError, match="") as refused:
        check_config(cfg, list(cfg.hydra.overrides.task), list(cfg.hydra.runtime.choices))
    assert message in str(refused.value)


def test_a_loss_objective_keeps_the_lowest_loss_and_its_checkpoint(compose_in):
    """val/loss_best is the lowest val/loss of the epochs; the best checkpoint is that epoch;
    the record says minimize. (The default model's best-so-far would be of accuracy.)"""
    cfg = compose_in(
        "max_epochs=4", "lr=0.03", "trainer.limit_train_batches=4", "optimized_metric=val/loss_best"
    )
    objective = train(cfg)
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "metrics.json").read_text())
    epochs = pd.read_csv(next(out.glob("**/metrics.csv"))).dropna(subset=["val/loss"])
    assert record["direction"] == "minimize"
    assert objective == pytest.approx(epochs["val/loss"].min(), rel=1e-6)
    assert record["metrics"]["val/loss_best"] == pytest.approx(epochs["val/loss"].min(), rel=1e-6)
    best_epoch = int(epochs.loc[epochs["val/loss"].idxmin(), "epoch"])
    assert Path(record["trained"]["best_checkpoint"]).name == f"epoch_{best_epoch:03d}.ckpt"


def test_a_sweep_over_a_loss_objective_ranks_the_lowest_first(tmp_path):
    """The report ranks by the direction the records carry: `auto` made it minimize."""
    from conftest import run_cli

    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "lr=0.001,0.5",
        "optimized_metric=val/loss_best",
        "max_epochs=1",
        "trainer.limit_train_batches=4",
        "callbacks=none",
        f"hydra.sweep.dir={sweep}",
        project=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads((sweep / j / "metrics.json").read_text()) for j in ("0", "1")]
    assert {r["direction"] for r in records} == {"minimize"}
    table = pd.read_csv(sweep / "summary.csv")
    assert list(table["objective"]) == sorted(r["objective"] for r in records)
    assert "minimized" in (sweep / "summary.md").read_text()
