"""Callbacks for tests that stop a training process the hard ways a cluster does (fresh runs
only, so that the resumed run goes on)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL right after optimizer step `step`, as a preemption or the OOM killer would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step and trainer.ckpt_path is None:
            os.kill(os.getpid(), signal.SIGKILL)


class SigtermAtEpochEnd(Callback):
    """SIGTERM at the end of epoch `epoch`, after its validation: the boundary case."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, *args) -> None:
        if trainer.current_epoch == self.epoch and trainer.ckpt_path is None:
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermAtBatch(Callback):
    """SIGTERM right after training batch `batch` of epoch `epoch` (a micro batch, maybe)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        fresh = trainer.ckpt_path is None
        if fresh and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)
