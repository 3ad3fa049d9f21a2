"""What a run shows while it trains: the live bar on a terminal, one line per epoch otherwise.

A progress bar redrawn in place is noise in a SLURM log, a CI log or a redirect, and shows
nothing until the run ends there. `progress()` (conf/callbacks/progress.yaml) gives the
rich bar when stdout is a terminal (`LiveBar`: Lightning's RichProgressBar, with the train
numbers of the epoch in progress), and `EpochLines` when it is not: one line per epoch
through Python logging (logger `trainlab.progress`), so that it also lands in Hydra's
`<run dir>/train.log`:

    epoch 2/20  step 38  train/acc 0.8113 train/loss 0.6402 | val/acc 0.9074 val/loss 0.3811
    | lr 0.001 | 5210 samples/s | 0:00:04 elapsed, ETA 0:00:38

The numbers are those of that epoch (the val ones of a validation in that epoch); samples/s
is the ThroughputSummary callback's rolling figure, once its window is full.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from trainlab.callbacks import ThroughputSummary
from trainlab.epoch_table import EpochRows
from trainlab.live_bar import LiveBar

log = logging.getLogger("trainlab.progress")


def on_terminal(stream=None) -> bool:
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress(**bar_kwargs: Any) -> Callback:
    """LiveBar(**bar_kwargs) on a terminal, else `EpochLines` (the Trainer then gets no
    progress bar: building.build_trainer enables one only when a callback is one)."""
    if on_terminal():
        return LiveBar(**bar_kwargs)
    return EpochLines()


def duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def number(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.4f}"


class EpochLines(EpochRows):
    """One log line per finished training epoch (global rank 0): epoch/max_epochs, step,
    train and val metrics, lr, samples/s and the time left (by this run's pace, to
    max_epochs or max_steps, whichever comes first)."""

    def __init__(self) -> None:
        super().__init__()
        self._started = 0.0
        self._first_epoch = 0
        self._first_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._started = time.perf_counter()
        self._first_epoch = trainer.current_epoch  # a resumed run: its pace is its own
        self._first_step = trainer.global_step

    def epoch_ended(self, trainer: L.Trainer, row: dict[str, Any]) -> None:
        log.info("%s", self.line(trainer, row, time.perf_counter() - self._started))

    def line(self, trainer: L.Trainer, row: dict[str, Any], elapsed: float) -> str:
        epoch, step = row["epoch"], row["step"]
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        parts = [f"epoch {epoch + 1}/{max_epochs or '?'}", f"step {step}"]
        for stage in ("train/", "val/"):
            metrics = [f"{k} {number(v)}" for k, v in row.items() if k.startswith(stage)]
            if metrics:
                parts.append(" ".join(metrics))
        if "lr" in row:
            parts.append(f"lr {row['lr']:.4g}")
        speed = samples_per_sec(trainer)
        if speed is not None:
            parts.append(f"{speed:.0f} samples/s")
        eta = self.eta(trainer, epoch, step, elapsed)
        parts.append(
            f"{duration(elapsed)} elapsed, ETA {duration(eta) if eta is not None else '?'}"
        )
        return " | ".join(parts)

    def eta(self, trainer: L.Trainer, epoch: int, step: int, elapsed: float) -> float | None:
        estimates = []
        epochs_done = epoch + 1 - self._first_epoch
        if trainer.max_epochs and trainer.max_epochs > 0 and epochs_done > 0:
            estimates.append(elapsed / epochs_done * max(trainer.max_epochs - epoch - 1, 0))
        steps_done = step - self._first_step
        if trainer.max_steps and trainer.max_steps > 0 and steps_done > 0:
            estimates.append(elapsed / steps_done * max(trainer.max_steps - step, 0))
        return min(estimates) if estimates else None


def samples_per_sec(trainer: L.Trainer) -> float | None:
    for callback in trainer.callbacks:
        if isinstance(callback, ThroughputSummary):
            summary = callback.summary  # the global rate is there only with several devices
            if "samples_per_sec" in summary:
                return summary["samples_per_sec"]
            if "device/samples_per_sec" in summary:
                return summary["device/samples_per_sec"] * trainer.world_size
    return None
