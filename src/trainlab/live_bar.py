"""The live bar on a terminal: Lightning's RichProgressBar, showing this epoch's train numbers.

The template's LightningModules log their train/ means once, at the end of each epoch
(trainlab.tasks.epoch_metrics), so Lightning's bar shows the previous epoch's train/loss
all through the next one. `LiveBar` shows the running means of the epoch in progress,
read from the module's `train_metrics` sums, in their place.

Reading the sums waits for the device. Rich's `refresh_rate` is redraws per second (100),
more often than anyone reads a number, and a wait at every step slows a fast GPU step. So
the means are read at most once every `metrics_every_s` seconds (by default 1), plus at the
first batch of each epoch (the last epoch's numbers never show as this one's) and at the
epoch's end (the last value shown is that epoch's mean); in between the bar shows what it
read last. Under DDP the bar (rank 0) shows rank 0's running means; the means logged at
the epoch's end are over every rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from trainlab.tasks.epoch_metrics import EpochSums


class LiveBar(RichProgressBar):
    """RichProgressBar whose train/ numbers are those of the epoch in progress (see the
    module's docstring). `clock` is what measures `metrics_every_s` (tests freeze it)."""

    def __init__(
        self,
        metrics_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        **rich_kwargs: Any,
    ) -> None:
        super().__init__(**rich_kwargs)
        self.metrics_every_s = metrics_every_s
        self.clock = clock
        self._running: dict[str, float] = {}
        self._read_at: float | None = None
        self._read_epoch: int | None = None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        return {**items, **self.running_means(trainer, pl_module)}

    def running_means(
        self, trainer: L.Trainer, pl_module: L.LightningModule, force: bool = False
    ) -> dict[str, float]:
        """`train/<name>` means of the epoch so far, read again when due (or `force`d)."""
        sums = getattr(pl_module, "train_metrics", None)
        if not isinstance(sums, EpochSums) or trainer.state.fn != TrainerFn.FITTING:
            return {}
        now = self.clock()
        due = (
            force
            or self._read_epoch != trainer.current_epoch
            or not self._running  # nothing read yet (no batch, or none this epoch)
            or self._read_at is None
            or now - self._read_at >= self.metrics_every_s
        )
        if due:
            self._running = {f"train/{k}": v for k, v in sums.running_means().items()}
            self._read_at, self._read_epoch = now, trainer.current_epoch
        return self._running

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before the module's own hook, which logs the epoch's means and zeroes the sums
        self.running_means(trainer, pl_module, force=True)
        super().on_train_epoch_end(trainer, pl_module)
