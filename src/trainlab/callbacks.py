"""Callbacks the pipeline always adds: they guard what `metrics.json` is allowed to claim."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Callback


class Diverged(RuntimeError):
    """The training loss stopped being a finite number: an outcome of a too-large lr, not a bug."""


class DivergenceGuard(Callback):
    """Stop at the first optimizer step whose loss is NaN or infinite.

    In an lr sweep divergence is expected: the job should end at once, with one line saying
    where and at which lr, and be recorded as `diverged` instead of training on garbage.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach())
        if math.isfinite(value):
            return
        lrs = sorted({group["lr"] for opt in trainer.optimizers for group in opt.param_groups})
        lr = ", ".join(f"{lr:g}" for lr in lrs)
        raise Diverged(
            f"diverged at step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {batch_idx}) with lr={lr}: the training loss is {value}"
        )
