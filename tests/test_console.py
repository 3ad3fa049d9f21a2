"""The console: on a terminal the live bar with the epoch in progress's train numbers;
without one, one line per epoch, in train.log too, no framework noise; and <run
dir>/epochs.csv (one row per epoch, train and val side by side, resumed without
duplicates)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar

from conftest import ROOT, cli_env, run_cli, train_cmd
from trainlab.building import build_trainer
from trainlab.console import EpochLines, progress
from trainlab.data.digits import DigitsDataModule
from trainlab.live_bar import LiveBar
from trainlab.models.nets import MLP
from trainlab.tables import LoggedModelSummary, LoggedResults
from trainlab.tasks.supervised import Supervised
from trainlab.tasks.task import Task

QUICK = ["max_epochs=3", "trainer.limit_train_batches=3"]  # 3 optimizer steps an epoch
HELPERS = {"PYTHONPATH": str(ROOT / "tests")}
LINE = re.compile(r"\[trainlab\.progress\]\[INFO\] - (epoch .*)$", re.MULTILINE)


# the digits' task, as conf/task/multiclass.yaml builds it
DIGITS = Task("multiclass", metrics=("acc", "f1"), num_classes=10)


def epochs_of(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "epochs.csv")


def shown(line: str, name: str) -> float:
    return float(re.search(rf"{re.escape(name)} (\S+)", line).group(1))


@pytest.fixture(scope="module")
def redirected(tmp_path_factory):
    """A default run (CSV logger) with stdout and stderr to pipes, samples/s reported."""
    run = tmp_path_factory.mktemp("redirected") / "run"
    result = subprocess.run(
        train_cmd(
            *QUICK,
            "trainer.log_every_n_steps=1",
            "callbacks.throughput.window_size=2",
            f"hydra.run.dir={run}",
        ),
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,  # pipes: no terminal
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def test_redirected_run_prints_one_line_per_epoch_with_that_epochs_numbers(redirected):
    run, result = redirected
    lines = LINE.findall(result.stdout)
    assert [line.split(" | ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    table = epochs_of(run)
    for line, row in zip(lines, table.to_dict("records"), strict=True):
        assert f"step {row['step']}" in line
        for name in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert shown(line, name) == pytest.approx(row[name], abs=6e-5), (name, line)
        assert shown(line, "lr") == pytest.approx(row["lr"])
        assert re.search(r"\d+ samples/s", line), line
        assert re.search(r"elapsed, ETA \d+:\d\d:\d\d$", line), line
    final = json.loads((run / "metrics.json").read_text())["metrics"]
    assert shown(lines[-1], "train/acc") == pytest.approx(final["train/acc"], abs=6e-5)
    assert shown(lines[-1], "val/acc") == pytest.approx(final["val/acc"], abs=6e-5)
    logged = LINE.findall((run / "train.log").read_text())
    assert logged == lines
    assert not re.search(r"^(Epoch \d|Testing|Validation)", result.stdout, re.MULTILINE)  # no bar


def test_redirected_run_drops_the_framework_noise_only(redirected):
    _, result = redirected
    output = result.stdout + result.stderr
    assert "LeafSpec" not in output
    assert "litlogger" not in output and "💡" not in output
    assert "smaller than the logging interval" not in output  # log_every_n_steps=1: none
    assert "GPU available" in output  # Lightning's other lines stay


def test_train_log_has_everything_a_redirected_run_printed(redirected):
    """The model summary and the test table too, each once, as logged text; no FLOPs (0
    without an example input); nothing on stderr (warnings are logged)."""
    run, result = redirected
    log = (run / "train.log").read_text()
    assert set(result.stdout.splitlines()) <= set(log.splitlines())
    assert result.stderr == ""
    for text in (result.stdout, log):
        assert text.count("model summary:") == 1 and text.count("test results:") == 1
        assert re.search(r"^85\.0 K +Total params$", text, re.MULTILINE)
        assert re.search(r"^0 +\| net +\| MLP +\| 85\.0 K +\| train$", text, re.MULTILINE)
        assert "FLOPs" not in text and "Flops" not in text
    assert "┃" not in result.stdout  # none of Lightning's rich tables
    final = json.loads((run / "metrics.json").read_text())["metrics"]
    for name in ("test/acc", "test/loss"):
        shown = re.search(rf"^{name} +\| (\S+)$", log, re.MULTILINE).group(1)
        assert float(shown) == pytest.approx(final[name], abs=6e-5)


def test_warnings_and_tables_land_in_train_log_whatever_the_callbacks(tmp_path):
    """Lightning's warning about a logging interval longer than the epoch goes through
    logging (stdout and train.log, one record), not to stderr; callbacks=none still logs
    the model summary and the test table."""
    run = tmp_path / "run"
    result = run_cli(*QUICK, "callbacks=none", f"hydra.run.dir={run}")  # a logger: a warning
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run / "train.log").read_text()
    warning = re.compile(
        r"\[py\.warnings\]\[WARNING\] - \S+fit_loop\.py:\d+: The number of training "
        r"batches \(3\) is smaller than the logging interval .*\n(?=\[)"  # no blank line
    )
    assert len(warning.findall(log)) == 1 and len(warning.findall(result.stdout)) == 1
    assert "logging interval" not in result.stderr
    assert "model summary:" in log and "test results:" in log


def test_epochs_csv_has_train_and_val_of_each_epoch_side_by_side(redirected):
    run, _ = redirected
    table = epochs_of(run)
    assert list(table["epoch"]) == [0, 1, 2]
    assert list(table["step"]) == [3, 6, 9]
    assert list(table.columns[:2]) == ["epoch", "step"] and table.columns[-1] == "lr"
    for name in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "lr"):
        assert table[name].notna().all(), name
    # the same numbers as the CSVLogger's rows, where train and val are apart
    logged = pd.read_csv(run / "csv" / "metrics.csv")
    val = logged.dropna(subset=["val/acc"]).set_index("epoch")["val/acc"]
    train = logged.dropna(subset=["train/acc"]).set_index("epoch")["train/acc"]
    assert list(table["val/acc"]) == pytest.approx(list(val))
    assert list(table["train/acc"]) == pytest.approx(list(train))


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_sigterm_then_resume_appends_each_epoch_once_without_a_logger(tmp_path):
    run = tmp_path / "run"
    stopped = run_cli(
        *QUICK,
        "logger=none",
        f"hydra.run.dir={run}",
        "+callbacks.stop._target_=kill_at_step.SigtermAtEpochEnd",
        "+callbacks.stop.epoch=0",
        env=HELPERS,
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert list(epochs_of(run)["epoch"]) == [0]  # stopped after the first step of epoch 1
    assert not (run / "csv").exists()
    resumed = run_cli(f"resume={run}", env=HELPERS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    table = epochs_of(run)
    assert list(table["epoch"]) == [0, 1, 2]
    assert list(table["step"]) == [3, 6, 9]
    assert table["val/acc"].notna().all() and table["train/acc"].notna().all()
    lines = LINE.findall(resumed.stdout)
    assert [line.split(" | ")[0] for line in lines] == ["epoch 2/3", "epoch 3/3"]


def with_umask_027(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cmd(*args),
        cwd=ROOT,
        env=cli_env(**HELPERS),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(0o027),  # in the child only
    )


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_a_run_killed_after_rows_its_checkpoint_lacks_rewrites_them_once(tmp_path):
    run = tmp_path / "run"
    # last.ckpt by steps only: the newest checkpoint is step 4's (epoch 1), rows 0 and 1 exist
    killed = with_umask_027(
        *QUICK,
        "logger=none",
        "checkpoint_every_n_steps=4",
        "checkpoint_every_s=0",
        f"hydra.run.dir={run}",
        "+callbacks.kill._target_=kill_at_step.KillAtStep",
        "+callbacks.kill.step=8",
    )
    assert killed.returncode == -signal.SIGKILL
    before = epochs_of(run)
    assert list(before["epoch"]) == [0, 1]
    resumed = with_umask_027(f"resume={run}")  # drops row 1 (a rewrite), then appends
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "epochs.csv").stat().st_mode & 0o777 == 0o640  # the umask's, not 0600
    record = json.loads((run / "metrics.json").read_text())
    assert record["trained"]["resumed_from"]["global_step"] == 4  # epoch 1 trained again
    after = epochs_of(run)
    assert list(after["epoch"]) == [0, 1, 2]
    assert after.iloc[:2]["train/acc"].tolist() == pytest.approx(before["train/acc"].tolist())


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_the_rich_bar_on_a_terminal_and_epoch_lines_otherwise(monkeypatch):
    monkeypatch.setattr("sys.stdout", _Stream(tty=True))
    assert isinstance(progress(), LiveBar)
    monkeypatch.setattr("sys.stdout", _Stream(tty=False))
    assert isinstance(progress(), EpochLines)


def test_the_trainer_has_a_bar_only_from_a_progress_bar_callback(compose_in):
    trainer_cfg = compose_in().trainer
    assert build_trainer(trainer_cfg, [EpochLines()], []).progress_bar_callback is None
    bar = RichProgressBar()
    assert build_trainer(trainer_cfg, [bar], []).progress_bar_callback is bar


class BarWatch(Callback):
    """Each training batch's loss and accuracy, worked out apart from the module with the
    weights that step trains from; the bar's numbers after each batch and at each epoch's
    end; the bar's clock moved a minute on at the batches in `tick_at`."""

    def __init__(self, now: list[float], tick_at: set[int]) -> None:
        self.now, self.tick_at = now, tick_at
        self.batches: dict[int, list[tuple[int, float, float]]] = {}
        self.shown: list[tuple[int, int, dict]] = []
        self.at_epoch_end: dict[int, dict] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx in self.tick_at:
            self.now[0] += 60.0
        x, y = batch
        with torch.no_grad():
            logits = pl_module(x)
        loss = torch.nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(dim=1) == y).float().mean().item()
        self.batches.setdefault(trainer.current_epoch, []).append((len(y), loss, acc))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = trainer.progress_bar_callback.get_metrics(trainer, pl_module)
        self.shown.append((trainer.current_epoch, batch_idx, metrics))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # after the bar's own hook, before the module's (which logs the epoch's means)
        metrics = trainer.progress_bar_callback.get_metrics(trainer, pl_module)
        self.at_epoch_end[trainer.current_epoch] = metrics

    def means(self, epoch: int, batches: int) -> dict[str, float]:
        seen = self.batches[epoch][:batches]
        count = sum(n for n, _, _ in seen)
        return {
            "train/loss": sum(n * loss for n, loss, _ in seen) / count,
            "train/acc": sum(n * acc for n, _, acc in seen) / count,
        }


def test_the_bar_shows_this_epochs_running_means_read_at_most_once_a_second():
    """Without a terminal the rich bar still runs; its clock is frozen, and moved a minute on
    before batch 2 of each epoch: the sums are read at each epoch's first batch, after a
    minute, and at the epoch's end, and in between the bar shows what it read last."""
    now = [0.0]
    bar = LiveBar(metrics_every_s=1.0, clock=lambda: now[0])
    watch = BarWatch(now, tick_at={2})
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar, watch],
    )
    module = Supervised(net=MLP(), optimizer=torch.optim.Adam, task=DIGITS)
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=32))

    read_after = {0: 1, 1: 1, 2: 3, 3: 3}  # batch -> the batches the shown means are over
    for epoch, batch_idx, metrics in watch.shown:
        expected = watch.means(epoch, read_after[batch_idx])
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, rel=1e-5), (epoch, batch_idx, name)
    assert [(e, b) for e, b, _ in watch.shown] == [(e, b) for e in (0, 1) for b in range(4)]
    for epoch in (0, 1):  # the epoch's own means, as the module then logs them
        for name, value in watch.means(epoch, 4).items():
            assert watch.at_epoch_end[epoch][name] == pytest.approx(value, rel=1e-5), name
    logged = trainer.progress_bar_metrics
    assert watch.at_epoch_end[1]["train/loss"] == pytest.approx(logged["train/loss"], rel=1e-6)
    # the previous epoch's validation still shows beside this epoch's train numbers
    first_of_epoch_1 = next(m for e, b, m in watch.shown if e == 1)
    assert "val/acc" in first_of_epoch_1 and "val/acc" not in watch.shown[0][2]


def tables_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trainlab.tables"]


def test_the_summary_shows_flops_only_when_lightning_counted_some(caplog):
    module = Supervised(net=MLP(), optimizer=torch.optim.Adam, task=DIGITS)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    summary = LoggedModelSummary()
    with caplog.at_level(logging.INFO, logger="trainlab.tables"):
        summary.on_fit_start(trainer, module)
        module.example_input_array = torch.zeros(4, 1, 8, 8)  # Lightning counts with it
        summary.on_fit_start(trainer, module)
    without, counted = tables_logged(caplog)
    assert "85.0 K    Total params" in without and "FLOPs" not in without
    assert "85.0 K    Total params" in counted
    header = counted.splitlines()[1]
    assert [c.strip() for c in header.split(" | ")][-3:] == ["FLOPs", "In sizes", "Out sizes"]
    total = re.search(r"^(\S+(?: [KMB])?) +Total FLOPs$", counted, re.MULTILINE).group(1)
    assert total not in ("0", "")


@pytest.mark.parametrize("verbose", [True, False])
def test_test_results_are_logged_as_lightning_would_print_them(verbose, caplog, capsys):
    module = Supervised(net=MLP(), optimizer=torch.optim.Adam, task=DIGITS)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LoggedResults()],
    )
    with caplog.at_level(logging.INFO, logger="trainlab.tables"):
        (results,) = trainer.test(module, DigitsDataModule(batch_size=64), verbose=verbose)
    assert "Test metric" not in capsys.readouterr().out  # Lightning printed nothing
    if not verbose:
        assert tables_logged(caplog) == []
        return
    (table,) = tables_logged(caplog)
    lines = table.splitlines()
    assert lines[:2] == ["test results:", "Test metric | Value"]
    shown = dict(line.split(" | ") for line in lines[3:-1])
    assert {k.strip(): float(v) for k, v in shown.items()} == pytest.approx(results, abs=6e-5)
