"""ThroughputSummary (trainlab.callbacks.guards) logs what Lightning's ThroughputMonitor logs,
row for row, with its cheaper per-batch update."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers.logger import Logger

from trainlab.callbacks import ThroughputSummary

TIMED = ("time", "per_sec", "mfu")  # clock-dependent: compared by presence, not value


class Rows(Logger):
    """Keeps every log_metrics call in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    name = "rows"
    version = 0

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass


class Flops(BoringModel):
    flops_per_batch = 1000


def samples(batch) -> int:
    return len(batch)


def tokens(batch) -> int:
    return batch.numel()


def logged(callback_type, model_type=Flops, **kwargs) -> tuple[list, ThroughputMonitor]:
    callback = callback_type(batch_size_fn=samples, length_fn=tokens, window_size=3, **kwargs)
    logger = Rows()
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=7, limit_val_batches=3, limit_test_batches=2,
        log_every_n_steps=2, accumulate_grad_batches=2, callbacks=[callback], logger=logger,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    model = model_type()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    return logger.rows, callback


def comparable(rows: list) -> list:
    return [
        (step, {k: (None if any(t in k for t in TIMED) else v) for k, v in metrics.items()})
        for step, metrics in rows
    ]


def test_it_logs_the_rows_lightnings_monitor_logs():
    ours, summary = logged(ThroughputSummary)
    stock, monitor = logged(ThroughputMonitor)
    assert comparable(ours) == comparable(stock)
    for stage, counted in monitor._throughputs.items():  # the windows behind every rate
        mine = summary._throughputs[stage]
        for window in ("_batches", "_samples", "_lengths", "_flops"):
            assert list(getattr(mine, window)) == list(getattr(counted, window)), (stage, window)
    keys = set().union(*(metrics for _, metrics in ours))
    # samples, lengths (items) and FLOPs counted, windows full: every rate is there
    assert {"train/device/samples_per_sec", "train/device/items_per_sec"} <= keys
    assert "train/device/flops_per_sec" in keys and "validate/samples" in keys
    assert summary.summary["device/samples_per_sec"] > 0


def test_a_model_without_a_flop_count_gets_lightnings_warning_and_no_flops():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, _ = logged(ThroughputSummary, model_type=BoringModel)
    assert any("flops_per_batch" in str(w.message) for w in caught)
    assert not any("flops" in k for _, metrics in rows for k in metrics)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_it_synchronizes_before_reading_the_clock(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append(a))
    summary = ThroughputSummary(batch_size_fn=samples)
    trainer = L.Trainer(
        accelerator="gpu", devices=1, max_steps=2, limit_val_batches=0, callbacks=[summary],
        logger=False, enable_progress_bar=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(Flops())
    assert len(calls) >= 2
