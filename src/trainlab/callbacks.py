"""Callbacks the pipeline always adds: they guard what `metrics.json` is allowed to claim."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Callback, ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage


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


def samples_in(batch) -> int:
    """Samples in a batch of (inputs, targets)."""
    return len(batch[0])


def tokens_in(batch) -> int:
    """Tokens in a batch of (B, T) token ids: the `items` of a language model's throughput."""
    return batch[0].numel()


class ThroughputSummary(ThroughputMonitor):
    """Lightning's ThroughputMonitor (samples/s, items/s, MFU where the device's peak FLOPs are
    known), keeping its last training numbers so the run can put them in metrics.json."""

    def __init__(self, batch_size_fn=samples_in, length_fn=None, **kwargs) -> None:
        super().__init__(batch_size_fn=batch_size_fn, length_fn=length_fn, **kwargs)
        self.summary: dict[str, float] = {}

    def _compute(self, trainer: L.Trainer, iter_num: int | None = None) -> None:
        super()._compute(trainer, iter_num)
        if trainer.state.stage == RunningStage.TRAINING:
            computed = self._throughputs[RunningStage.TRAINING].compute()
            self.summary = {name: float(value) for name, value in computed.items()}
