"""`python eval.py ckpt_path=...` and `predict=<split>` (trainlab.predicting).

write_predictions is tested with a small LightningModule of its own and the real digits data;
eval.py end to end, on the best checkpoint of a short run trained in this process.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, cli_env, compose_run
from trainlab.checks import ConfigError
from trainlab.config_checks import check_config
from trainlab.data.digits import DigitsDataModule
from trainlab.faults import describe
from trainlab.predicting import write_predictions
from trainlab.run import train

# --- write_predictions ------------------------------------------------------------------------


class Linear(L.LightningModule):
    """The contract: predict_step returns per-sample columns, 1-D and 2-D."""

    def __init__(self, returns=None) -> None:
        super().__init__()
        self.net = torch.nn.Linear(64, 10)
        self.returns = returns

    def forward(self, x):
        return self.net(x.flatten(1))

    def predict_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        if self.returns is not None:
            return self.returns(logits, y)
        return {"target": y, "pred": logits.argmax(1), "prob": logits.softmax(1)}


class ForwardOnly(L.LightningModule):
    """Lightning's default predict_step: the bare forward output."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(64, 10)

    def forward(self, batch):
        return self.net(batch[0].flatten(1))


class NoTestSplit(DigitsDataModule):
    def setup(self, stage=None) -> None:
        super().setup(stage)
        self.test_set = None


def trainer() -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_predictions_are_one_row_per_sample_of_the_split_in_its_order(tmp_path, split):
    data = DigitsDataModule(batch_size=50, seed=0)  # train: 1167 samples, a partial last batch
    path = write_predictions(trainer(), Linear(), data, split, None, tmp_path)

    assert path == tmp_path / f"predictions_{split}.csv"
    rows = read_rows(path)
    dataset = getattr(data, f"{split}_set")
    assert len(rows) == len(dataset)
    columns = ["index", "sample", "target", "pred", *(f"prob_{j}" for j in range(10))]
    assert list(rows[0]) == columns
    assert [int(r["index"]) for r in rows] == list(range(len(dataset)))
    # `sample` joins a row back to the whole data set: its label there is the row's target
    labels = data.arrays()[1]
    assert [labels[int(r["sample"])] for r in rows] == [int(r["target"]) for r in rows]
    # the split's own order, never shuffled (train too): row i is sample i of the split
    assert [int(r["target"]) for r in rows] == dataset.tensors[1].tolist()
    assert all(abs(sum(float(r[f"prob_{j}"]) for j in range(10)) - 1) < 1e-5 for r in rows)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written atomically: no temp


def test_predictions_use_the_checkpoints_weights(tmp_path):
    model = Linear()
    torch.nn.init.zeros_(model.net.weight)
    torch.nn.init.constant_(model.net.bias, 0.0)
    model.net.bias.data[3] = 5.0  # predicts 3 for every sample
    ckpt = tmp_path / "fixed.ckpt"
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": L.__version__}, ckpt)

    path = write_predictions(trainer(), Linear(), DigitsDataModule(), "val", str(ckpt), tmp_path)
    assert {r["pred"] for r in read_rows(path)} == {"3"}


def test_a_model_with_lightnings_default_predict_step_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError) as refused:
        write_predictions(trainer(), ForwardOnly(), DigitsDataModule(), "test", None, tmp_path)
    message = str(refused.value)
    assert "predict=test" in message and "ForwardOnly" in message
    assert "default predict_step" in message and "dict" in message
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("returns", "words"),
    [
        (lambda logits, y: logits, "returned a tensor of shape"),
        (lambda logits, y: {}, "returned an empty dict"),
        (lambda logits, y: {"pred": logits.argmax(1)[:-1]}, "'pred' is a tensor of shape"),
        (lambda logits, y: {"x": logits[:, :, None]}, "'x' is a tensor of shape"),
        (lambda logits, y: {"index": y}, "named 'index'"),
        (lambda logits, y: {"p": logits[:, :2], "p_1": y}, "named 'p_1'"),
    ],
    ids=["tensor", "empty", "short", "3-D", "index", "clash"],
)
def test_a_predict_step_that_breaks_the_contract_is_one_clear_message(tmp_path, returns, words):
    with pytest.raises(ConfigError) as refused:
        write_predictions(trainer(), Linear(returns), DigitsDataModule(), "val", None, tmp_path)
    assert words in str(refused.value)
    assert "Linear.predict_step" in str(refused.value)
    assert not list(tmp_path.iterdir())


def test_a_split_the_datamodule_does_not_have_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError) as refused:
        write_predictions(trainer(), Linear(), NoTestSplit(), "test", None, tmp_path)
    message = str(refused.value)
    assert "NoTestSplit has no test split" in message and "train, val" in message


@pytest.mark.parametrize("value", ["tst", "true", "1", "[test]"])
def test_a_bad_predict_value_is_refused_before_any_work(compose_in, value):
    cfg = compose_in(f"predict={value}")
    with pytest.raises(ConfigError) as refused:
        check_config(cfg, list(cfg.hydra.overrides.task), list(cfg.hydra.runtime.choices))
    assert describe(refused.value).startswith("predict="), describe(refused.value)
    assert "train, val, test" in str(refused.value)


@pytest.mark.parametrize("value", ["null", "train", "val", "test"])
def test_every_predict_value_is_accepted(compose_in, value):
    cfg = compose_in(f"predict={value}")
    check_config(cfg, list(cfg.hydra.overrides.task), list(cfg.hydra.runtime.choices))


# --- eval.py: which options it takes from the checkpoint's run ---------------------------------


@pytest.fixture
def eval_script(monkeypatch):
    """eval.py as a module (it imports train.py, which sets TRAINLAB_RUN_ID: restored)."""
    import os

    monkeypatch.setenv("TRAINLAB_RUN_ID", os.environ.get("TRAINLAB_RUN_ID", "tests0"))
    monkeypatch.syspath_prepend(str(ROOT))
    spec = importlib.util.spec_from_file_location("eval_script", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(tmp_path: Path, overrides: list[str]) -> Path:
    """A run dir as train.py leaves it, as far as eval.py reads it."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return a_zip(run / "checkpoints" / "last.ckpt")


def a_zip(path: Path) -> Path:
    """What eval_argv checks of a checkpoint: a zip archive, as torch.save writes (the run
    reads it)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"")
    return path


def test_eval_takes_the_runs_options_but_not_how_it_trained_or_where(tmp_path, eval_script):
    ckpt = fake_run(
        tmp_path,
        [
            *("model=cnn", "data.val_fraction=0.2", "seed=3", "experiment=digits_cnn_onecycle"),
            *("task=multiclass", "+trainer.limit_test_batches=5", "batch_size=32"),
            # not carried: training knobs, directories, sweeps, the start/stop knobs
            *("lr=0.1", "optimizer=sgd", "optimizer.momentum=0.5", "max_epochs=3", "tune=lr"),
            *("paths.log_dir=/x", "hydra.run.dir=/x", "hydra/launcher=joblib", "cv.folds=3"),
            *("hparams_search=optuna", "debug=limit", "test=false", "task_name=mine"),
            *("resume=/x", "predict=val", "train=true", "ckpt_path=/y.ckpt"),
        ],
    )
    argv = eval_script.eval_argv(["eval.py", f"ckpt_path={ckpt}", "batch_size=128", "seed=4"])
    assert argv == [
        "eval.py",
        *("model=cnn", "data.val_fraction=0.2", "experiment=digits_cnn_onecycle"),
        *("task=multiclass", "+trainer.limit_test_batches=5"),
        # the user's own options come last, and a key given there replaces the run's
        *(f"ckpt_path={ckpt}", "batch_size=128", "seed=4"),
    ]


def test_a_checkpoint_outside_a_run_dir_is_evaluated_with_the_command_line_only(
    tmp_path, eval_script
):
    ckpt = a_zip(tmp_path / "loose.ckpt")
    argv = ["eval.py", f"ckpt_path={ckpt}", "model=cnn"]
    assert eval_script.eval_argv(argv) == argv


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "no ckpt_path was given"),
        (["ckpt_path=nowhere/last.ckpt"], "ckpt_path=nowhere/last.ckpt is not a checkpoint file"),
        (["ckpt_path=a.ckpt,b.ckpt"], "is not a checkpoint file"),
    ],
    ids=["missing", "no such file", "a list"],
)
def test_a_missing_ckpt_path_is_refused_before_hydra(eval_script, args, words):
    with pytest.raises(ConfigError) as refused:
        eval_script.eval_argv(["eval.py", *args])
    assert words in str(refused.value)


def test_help_needs_no_ckpt_path(eval_script):
    assert eval_script.eval_argv(["eval.py", "--help"]) == ["eval.py", "--help"]


# --- eval.py end to end ------------------------------------------------------------------------


def eval_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "eval.py"), *args]


def run_eval(*args: str, project: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python eval.py <args>` as a user types it, with `project` as the project root."""
    return subprocess.run(
        eval_cmd(*args),
        cwd=ROOT,
        env=cli_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot(run: Path) -> dict[str, tuple[int, int]]:
    files = sorted(run.rglob("*"))
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """(project root, run dir) of one short training run with a non-default seed and model,
    trained in this process (as train.py would, writing .hydra/overrides.yaml as Hydra does)."""
    project = tmp_path_factory.mktemp("project")
    run = project / "outputs" / "train" / "2026-01-01" / "00-00-00_tests0"
    cfg = compose_run(["max_epochs=2", "seed=3", "model=cnn", "logger=csv"], run)
    train(cfg)
    overrides = OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return project, run


def evaluated(project: Path) -> dict:
    records = sorted((project / "outputs" / "eval").glob("*/*/metrics.json"))
    assert records, "eval.py wrote no run dir under outputs/eval/"
    return json.loads(records[-1].read_text()) | {"run_dir": str(records[-1].parent)}


def test_eval_py_evaluates_a_runs_checkpoint_with_that_runs_options(trained_run):
    project, run = trained_run
    trained = json.loads((run / "metrics.json").read_text())
    best = trained["trained"]["best_checkpoint"]
    before = snapshot(run)

    result = run_eval(f"ckpt_path={best}", project=project)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "seed=3" in result.stderr and "model=cnn" in result.stderr  # it says what it took
    record = evaluated(project)
    assert record["status"] == "completed"
    assert record["trained"]["evaluated"]["checkpoint"] == best
    assert "predictions" not in record["trained"]
    # the same weights on the same split (seed=3, model=cnn came from the run): the same numbers
    assert record["metrics"]["val/acc"] == pytest.approx(trained["metrics"]["val/acc_best"])
    assert record["metrics"]["test/acc"] == pytest.approx(trained["metrics"]["test/acc"])
    eval_dir = Path(record["run_dir"])
    assert eval_dir.parent.parent.name == "eval"
    overrides = (eval_dir / ".hydra" / "overrides.yaml").read_text()
    assert "seed=3" in overrides and "max_epochs" not in overrides
    assert snapshot(run) == before  # the training run's dir is only read


def test_eval_py_without_a_usable_ckpt_path_is_one_paragraph(tmp_path):
    garbled = tmp_path / "garbled.ckpt"
    garbled.write_text("not a checkpoint")
    for args, words in (
        ((), "no ckpt_path was given"),
        ((f"ckpt_path={tmp_path / 'none.ckpt'}",), "is not a checkpoint file"),
        ((f"ckpt_path={garbled}",), "is not a readable checkpoint"),
        ((f"ckpt_path={tmp_path}",), "is not a checkpoint file"),
    ):
        result = run_eval(*args, project=tmp_path)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and words in errors[0], result.stderr[-2000:]
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_eval_py_writes_the_test_predictions_of_the_checkpoint(trained_run):
    project, run = trained_run
    best = json.loads((run / "metrics.json").read_text())["trained"]["best_checkpoint"]

    result = run_eval(f"ckpt_path={best}", "predict=test", project=project)

    if result.returncode != 0 and "default predict_step" in result.stderr:
        pytest.skip("the model's predict_step is still Lightning's default (no task base yet)")
    assert result.returncode == 0, result.stderr[-3000:]
    record = evaluated(project)
    path = Path(record["trained"]["predictions"])
    assert path == Path(record["run_dir"]) / "predictions_test.csv"
    rows = read_rows(path)
    data = DigitsDataModule(seed=3)
    data.setup()
    assert [int(r["index"]) for r in rows] == list(range(len(data.test_set)))
    if "target" in rows[0]:
        assert [int(r["target"]) for r in rows] == data.test_set.tensors[1].tolist()
    if "prediction" in rows[0] and "target" in rows[0]:
        right = sum(r["prediction"] == r["target"] for r in rows) / len(rows)
        assert right == pytest.approx(record["metrics"]["test/acc"], abs=1e-4)


def test_eval_keeps_the_runs_data_split(tmp_path, eval_script):
    """The seeds that drew the run's split go with it; another one would evaluate on a split
    whose test samples the checkpoint may have trained on, so it is refused."""
    ckpt = fake_run(tmp_path, ["data=diabetes"])
    (ckpt.parent.parent / ".hydra" / "config.yaml").write_text("seed: 42\nsplit_seed: 42\n")
    argv = eval_script.eval_argv(["eval.py", f"ckpt_path={ckpt}"])
    assert {"data=diabetes", "seed=42", "split_seed=42"} <= set(argv)
    for bad in (["seed=1"], ["split_seed=0"], ["seed=1", "split_seed=7"]):
        with pytest.raises(ConfigError, match="another seed draws another split"):
            eval_script.eval_argv(["eval.py", f"ckpt_path={ckpt}", *bad])
    # a new init seed over the run's own split is fine
    argv = eval_script.eval_argv(["eval.py", f"ckpt_path={ckpt}", "seed=1", "split_seed=42"])
    assert argv.count("seed=1") == 1 and "seed=42" not in argv
