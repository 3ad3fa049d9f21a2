"""Callbacks the pipeline always adds: they guard what `metrics.json` is allowed to claim."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage

log = logging.getLogger(__name__)


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


class Interrupted(Exception):
    """SIGINT or SIGTERM ended the run; `signum` says which."""

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}{detail}")


class StopOnSignal(Callback):
    """Ctrl-C (SIGINT) or SIGTERM: finish the optimizer step in progress, save
    `<checkpoint_dir>/last.ckpt`, and end the run with `Interrupted`.

    During the training loop the signal only marks the run; it stops at the end of the next
    batch that completes an optimizer step (never in the middle of gradient accumulation or
    of a validation, whose state a checkpoint cannot hold), on every rank at the same step.
    Lightning's own SIGTERM handler would stop after any batch, so the training loop takes
    SIGTERM back from it. Outside the training loop (data setup, sanity check, test) a signal
    stops the run at once: there is no training state to save. A second signal stops at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.signum: int | None = None
        self.saved: Path | None = None
        self._training = False
        self._step_before = 0
        self._previous: dict[int, Any] = {}

    @contextmanager
    def installed(self):
        """Catch SIGINT and SIGTERM while the block runs (main thread only), then put back
        the handlers that were there before."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame) -> None:
        if self.signum is not None or not self._training:
            self.signum = self.signum or signum
            raise Interrupted(signum)
        self.signum = signum
        log.warning(
            "%s received: stopping after the current optimizer step and saving a checkpoint "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._training = True
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:  # Lightning's teardown puts back what was there before fit
                signal.signal(s, self._on_signal)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._training = False
        if self.signum is not None:
            log.warning("the signal came after the last training step: the run finishes")

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._training = False

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self._step_before:  # accumulating: no step taken yet
            return
        stop = self.signum is not None
        if trainer.world_size > 1:  # every rank stops after the same step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        path = self.checkpoint_dir / "last.ckpt"
        trainer.save_checkpoint(path)
        self.saved = path
        raise Interrupted(self.signum or signal.SIGTERM)


class LoopTimer(Callback):
    """Wall seconds of the training loop itself, from the first training batch to the end of
    the last validation: what compares with a hand-written loop (`trainer.fit` also sets up,
    runs a sanity check and tears down)."""

    def __init__(self) -> None:
        self.seconds: float | None = None
        self._started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.seconds = (self.seconds or 0.0) + time.perf_counter() - self._started
