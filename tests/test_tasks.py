"""Task modules: one base, three supervised kinds, sized from the data; what a data set tells
the model (DataSpec); a model that does not fit its data is refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from sklearn.metrics import f1_score, mean_absolute_error, r2_score, roc_auc_score

from conftest import group_options, run_cli
from quick import QUICK
from trainlab.building import build_module, check_model_fits_data
from trainlab.checks import ConfigError
from trainlab.data.sizing import check_sized_from_data
from trainlab.data.spec import DataSpec
from trainlab.faults import describe
from trainlab.models.nets import MLP
from trainlab.run import train
from trainlab.tasks.metrics import build_scores
from trainlab.tasks.supervised import Supervised
from trainlab.tasks.task import Task

# every shipped data set: its task, one input's shape, and what its model's head gives
SHIPPED = {
    "digits": ("multiclass", [1, 8, 8], 10, "val/acc_best", "maximize"),
    "breast_cancer": ("binary", [30], 1, "val/auroc_best", "maximize"),
    "diabetes": ("regression", [10], 1, "val/mse_best", "minimize"),
    "text": ("language_model", [128], 256, "val/loss_best", "minimize"),
}


@pytest.mark.parametrize("data", sorted(SHIPPED))
def test_each_data_set_sizes_the_model_and_picks_its_task(data, compose_in):
    task, shape, outputs, objective, _ = SHIPPED[data]
    model = "gpt" if task == "language_model" else "mlp"
    cfg = compose_in(f"data={data}", f"model={model}")
    assert cfg.task.kind == task and cfg.hydra.runtime.choices.task == task
    assert cfg.optimized_metric == objective
    assert instantiate(cfg.data).spec.input_shape == tuple(shape)
    if model == "mlp":
        assert cfg.model.net.in_features == int(np.prod(shape))
        assert cfg.model.net.num_outputs == outputs
    else:
        assert (cfg.model.net.vocab_size, cfg.model.net.block_size) == (outputs, shape[0])


@pytest.mark.parametrize("experiment", [None, "gpt_small"])
def test_model_gpt_reads_the_text_data_unless_a_data_is_given(experiment, compose_in):
    """A language model picks its data (and so its task): `model=gpt` alone trains."""
    given = [f"experiment={experiment}"] if experiment else ["model=gpt"]
    cfg = compose_in(*given)
    assert cfg.hydra.runtime.choices.data == "text" and cfg.task.kind == "language_model"
    assert compose_in("model=gpt", "data=digits").hydra.runtime.choices.data == "digits"


def test_the_data_spec_follows_the_data_config(compose_in):
    cfg = compose_in("data=text", "model=gpt", "data.block_size=64")
    assert cfg.model.net.block_size == 64


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["model=cnn", "data=breast_cancer"], "model.net.in_channels"),
        (["model=cnn", "data=diabetes"], "square images"),
        (["model=gpt", "data=digits"], "tokens"),
        (["model=gpt", "data=diabetes"], "model=gpt"),
        (["task=multiclass", "data=diabetes"], "task=multiclass does not fit data=diabetes"),
    ],
)
def test_a_model_the_data_cannot_size_is_one_message(overrides, says, compose_in):
    cfg = compose_in(*overrides)
    with pytest.raises(ConfigError) as refused:
        check_sized_from_data(cfg, dict(cfg.hydra.runtime.choices), overrides)
    assert says in str(refused.value)
    assert "data=" in str(refused.value)  # names the data too


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["model=mlp", "data=text"], "model=gpt"),  # a language model's data, a supervised module
        (["task=regression", "data=digits"], "task=regression does not fit data=digits"),
        (["task=binary", "data=digits"], "multiclass"),
        (["data=diabetes", "model.net.num_outputs=3"], "needs 1"),
        (["data=diabetes", "model.net.in_features=64"], "cannot take data=diabetes's inputs"),
    ],
)
def test_a_network_that_does_not_fit_the_data_is_refused_before_training(
    overrides, says, compose_in
):
    cfg = compose_in(*overrides)
    with pytest.raises(ConfigError) as refused:
        module = build_module(cfg.model, cfg.task, instantiate(cfg.optimizer), None)
        check_model_fits_data(module, instantiate(cfg.data), cfg.hydra.runtime.choices.data)
    assert says in describe(refused.value)


def test_a_mismatch_from_the_command_line_is_one_line_and_exit_2(tmp_path):
    result = run_cli("model=cnn", "data=breast_cancer", "logger=none", project=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "in_channels" in errors[0] and "breast_cancer" in errors[0]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("outputs/**/checkpoints/*.ckpt"))  # nothing trained


def test_an_unknown_metric_is_refused_with_the_ones_there_are():
    with pytest.raises(ConfigError, match="mse, rmse, mae, r2"):
        build_scores("regression", ["mse", "accuracy"], None)
    with pytest.raises(ConfigError, match="auroc"):
        build_scores("binary", ["auroc", "auroc"], None)


def spec_shaped(spec: DataSpec, n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spec.input_shape, generator=g)
    if spec.task == "multiclass":
        y = torch.arange(n) % spec.num_classes
    elif spec.task == "binary":
        y = (torch.arange(n) % 2).float()
    else:
        y = torch.randn(n, generator=g)
    return x, y


@pytest.mark.parametrize(
    ("kind", "metrics", "spec"),
    [
        ("multiclass", ("acc", "f1"), DataSpec("multiclass", (5,), num_classes=3)),
        ("binary", ("auroc", "acc", "f1"), DataSpec("binary", (5,), num_classes=2)),
        ("regression", ("mse", "mae", "r2"), DataSpec("regression", (5,), num_targets=1)),
    ],
)
def test_epoch_scores_equal_scikit_learn_over_the_whole_split(kind, metrics, spec):
    """Scores are of the whole split, not means of batch scores (AUROC, F1 and R² are not
    averages); batches of 16 over 64 samples."""
    task = Task(kind, metrics=metrics, num_classes=spec.num_classes)
    module = Supervised(MLP(5, (8,), spec.num_outputs), torch.optim.Adam, task=task)
    x, y = spec_shaped(spec)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    (results,) = trainer.validate(module, dataloaders=loader, verbose=False)
    with torch.no_grad():
        out = module._outputs(x)
    if kind == "multiclass":
        predicted = out.argmax(1).numpy()
        assert results["val/acc"] == pytest.approx((predicted == y.numpy()).mean(), abs=1e-6)
        assert results["val/f1"] == pytest.approx(
            f1_score(y, predicted, average="macro", labels=range(3)), abs=1e-5
        )
    elif kind == "binary":
        prob = out.sigmoid().numpy()
        assert results["val/auroc"] == pytest.approx(roc_auc_score(y, prob), abs=1e-5)
        assert results["val/acc"] == pytest.approx(((prob > 0.5) == (y.numpy() > 0.5)).mean())
        assert results["val/f1"] == pytest.approx(f1_score(y, prob > 0.5), abs=1e-5)
    else:
        pred = out.numpy()
        assert results["val/mse"] == pytest.approx(float(((pred - y.numpy()) ** 2).mean()), 1e-5)
        assert results["val/loss"] == pytest.approx(results["val/mse"], 1e-5)
        assert results["val/mae"] == pytest.approx(mean_absolute_error(y, pred), 1e-5)
        assert results["val/r2"] == pytest.approx(r2_score(y, pred), abs=1e-5)
    assert results[f"val/{metrics[0]}_best"] == results[f"val/{metrics[0]}"]


def test_scores_stay_float32_when_the_model_trains_in_bf16():
    task = Task("regression", metrics=("mse",))
    module = Supervised(MLP(5, (8,), 1), torch.optim.Adam, task=task)
    spec = DataSpec("regression", (5,), num_targets=1)
    x, y = spec_shaped(spec)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, precision="bf16-true"
    )
    trainer.validate(module, dataloaders=loader, verbose=False)
    assert module.net.layers[1].weight.dtype == torch.bfloat16
    assert module.val_scores["mse"].sum_squared_error.dtype == torch.float32
    # the epoch sums and the best-so-far too: a bfloat16 count stops at 256 batches of 64
    assert module.val_metrics.sums.dtype == torch.float32
    assert module.val_mse_best.dtype == torch.float32


@pytest.mark.parametrize("data", ["breast_cancer", "diabetes"])
def test_each_tabular_task_trains_and_records_its_objective(data, compose_in):
    task, _, _, objective, direction = SHIPPED[data]
    cfg = compose_in(f"data={data}", "logger=none", "callbacks=none", "max_epochs=3")
    value = train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert (record["optimized_metric"], record["direction"]) == (objective, direction)
    assert record["objective"] == pytest.approx(value)
    metrics = record["metrics"]
    if task == "binary":
        assert 0.9 < metrics["val/auroc_best"] <= 1 and "test/auroc" in metrics
    else:  # standardized targets: the mean scores 1.0; three epochs already beat it
        assert metrics["val/mse_best"] < 0.8 and metrics["test/r2"] > 0.2
        assert metrics["val/mse_best"] == min(metrics["val/mse_best"], metrics["val/mse"])
        scale = record["trained"]["target_scale"]  # the standardized units, said in raw ones
        assert 140 < scale["mean"] < 165 and 70 < scale["std"] < 85


def test_predictions_of_a_regression_are_in_the_data_units(compose_in):
    cfg = compose_in("data=diabetes", "logger=none", "callbacks=none", *QUICK, "predict=test")
    train(cfg)
    import pandas as pd

    table = pd.read_csv(Path(cfg.paths.output_dir) / "predictions_test.csv")
    datamodule = instantiate(cfg.data)
    targets = datamodule.arrays()[1][datamodule.split_indices()["test"]]
    assert table["target"].to_numpy() == pytest.approx(targets, rel=1e-5)
    assert 25 < table["prediction"].mean() < 346  # the target's own range, not z-scores


@pytest.mark.parametrize("debug", group_options("debug"))
def test_a_debug_mode_is_recorded_debug_without_an_objective(debug, compose_in):
    cfg = compose_in(f"debug={debug}", "logger=none", "max_epochs=1", "trainer.max_steps=2")
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert (record["status"], record["objective"], record["debug"]) == ("debug", None, debug)


def test_a_data_config_without_its_task_line_is_told_the_line_to_add():
    from trainlab.data.sizing import check_task_of_data

    spec = DataSpec("binary", (30,), num_classes=2)
    with pytest.raises(ConfigError) as refused:
        check_task_of_data(spec, "multiclass", "mine", given=["lr=0.1"])
    said = describe(refused.value)
    assert "conf/data/mine.yaml picks task=multiclass" in said
    assert "override /task@_global_.task: binary" in said
    with pytest.raises(ConfigError, match="task=multiclass does not fit data=mine, which is bin"):
        check_task_of_data(spec, "multiclass", "mine", given=["task=multiclass"])
    check_task_of_data(spec, "binary", "mine", given=[])  # agreeing: nothing to say


class NoSpec(L.LightningDataModule):
    """A DataModule of a fork that declares no spec."""

    def __init__(self, batch_size: int = 64, seed: int = 0, **digits_arguments) -> None:
        super().__init__()


def test_a_data_module_without_spec_runs_with_sizes_given_as_numbers(compose_in):
    sized = ("model.net.in_features=64", "model.net.num_outputs=10", "task.num_classes=10")
    cfg = compose_in("data._target_=test_tasks.NoSpec", *sized)
    check_sized_from_data(cfg, {"data": "nospec"})  # no ${data_spec:...} left to ask for it
    cfg = compose_in("data._target_=test_tasks.NoSpec")
    with pytest.raises(ConfigError, match="NoSpec declares no `spec`"):
        check_sized_from_data(cfg, {"data": "nospec"})
