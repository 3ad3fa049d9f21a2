"""A few batches of real training for every optimizer and scheduler; determinism; checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import group_options
from quick import QUICK
from trainlab.models.nets import MLP
from trainlab.run import train
from trainlab.tasks.supervised import Supervised

FAST = [*QUICK, "logger=none", "callbacks=none"]


def metrics_of(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


@pytest.mark.parametrize("optimizer", group_options("optimizer"))
def test_every_optimizer_trains(optimizer, compose_in):
    cfg = compose_in(*FAST, f"optimizer={optimizer}", "lr=0.01")
    objective = train(cfg)
    record = metrics_of(cfg)
    assert record["status"] == "completed"
    assert record["objective"] == pytest.approx(objective)
    assert record["hparams"]["optimizer"] == optimizer
    built = record["trained"]["optimizer"]
    assert built["param_groups"][0]["lr"] == pytest.approx(0.01)
    assert record["trained"]["optimizer_steps"] == 6  # 3 batches x 2 epochs


SCHEDULER_CLASSES = {
    "none": None,
    "step": "StepLR",
    "multistep": "MultiStepLR",
    "exponential": "ExponentialLR",
    "cosine": "CosineAnnealingLR",
    "onecycle": "OneCycleLR",
    "plateau": "ReduceLROnPlateau",
    "warmup_cosine": "LambdaLR",
    "warmup_linear": "LambdaLR",
    "wsd": "LambdaLR",
    "inverse_sqrt": "LambdaLR",
    "constant_warmup": "LambdaLR",
}


@pytest.mark.parametrize("scheduler", group_options("scheduler"))
def test_every_scheduler_trains(scheduler, compose_in):
    cfg = compose_in(*FAST, f"scheduler={scheduler}")
    train(cfg)
    record = metrics_of(cfg)
    assert record["status"] == "completed"
    assert record["trained"]["scheduler"] == SCHEDULER_CLASSES[scheduler]


@pytest.mark.parametrize(
    ("scheduler", "length_arg"), [("cosine", "T_max"), ("onecycle", "total_steps")]
)
def test_step_schedules_are_sized_in_optimizer_steps(scheduler, length_arg, compose_in):
    """The schedule's length is Lightning's count of optimizer steps, not a guess in config."""
    cfg = compose_in(*QUICK, "logger=none", "callbacks=checkpoint", f"scheduler={scheduler}")
    train(cfg)
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = last["lr_schedulers"]
    assert state[length_arg] == 6  # 3 batches x 2 epochs


def test_plateau_monitors_val_loss(compose_in):
    from hydra.utils import instantiate

    cfg = compose_in("scheduler=plateau")
    spec = instantiate(cfg.scheduler)
    assert spec.monitor == "val/loss" and spec.interval == "epoch"


def test_same_seed_same_metrics(compose_in):
    overrides = [
        "logger=none",
        "callbacks=checkpoint",
        "max_epochs=2",
        "optimizer=sgd_momentum",
        "lr=0.05",
    ]
    first, second = compose_in(*overrides), compose_in(*overrides)
    train(first)
    train(second)
    a, b = metrics_of(first), metrics_of(second)
    assert a["metrics"] == b["metrics"]
    other = compose_in(*overrides, "seed=7")
    train(other)
    assert metrics_of(other)["metrics"] != a["metrics"]


def test_best_checkpoint_loads_with_weights_only_and_gives_the_test_metrics(compose_in):
    cfg = compose_in("logger=none", "callbacks=checkpoint", "max_epochs=3")
    train(cfg)
    record = metrics_of(cfg)
    best = record["trained"]["best_checkpoint"]
    assert best and Path(best).exists() and (Path(best).parent / "last.ckpt").exists()

    checkpoint = torch.load(best, weights_only=True)  # torch's safe default loading
    assert checkpoint["hyper_parameters"] == {"weight_decay_groups": "auto"}

    import lightning as L
    from hydra.utils import instantiate

    module = Supervised.load_from_checkpoint(
        best, net=MLP(), optimizer=torch.optim.Adam, task=instantiate(cfg.task), weights_only=True
    )
    datamodule = instantiate(cfg.data)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (results,) = trainer.test(module, datamodule=datamodule)
    assert results["test/acc"] == pytest.approx(record["metrics"]["test/acc"])


def test_logged_metrics_lists_exactly_what_the_module_logs(compose_in):
    cfg = compose_in(*FAST)
    train(cfg)
    logged = {name for name in metrics_of(cfg)["metrics"] if not name.startswith("lr-")}
    from hydra.utils import instantiate

    task = instantiate(cfg.task)
    module = Supervised(net=torch.nn.Linear(64, 10), optimizer=torch.optim.Adam, task=task)
    assert logged == set(module.logged_metrics)


def test_failed_run_says_failed(compose_in):
    # OneCycleLR asked to cycle momentum, which Adagrad does not have: torch refuses at fit time
    cfg = compose_in(
        *FAST, "optimizer=adagrad", "scheduler=onecycle", "scheduler.factory.cycle_momentum=true"
    )
    with pytest.raises(ValueError):
        train(cfg)
    record = metrics_of(cfg)
    assert record["status"] == "failed"
    assert record["objective"] is None
    assert "momentum" in record["error"]
