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
from lightning.pytorch.utilities.exceptions import SIGTERMException

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

    While fitting, Lightning's own SIGTERM handling stops at the step boundary (on every rank,
    under DDP) by raising SIGTERMException; Ctrl-C is sent down the same path. Outside fitting
    (data setup, test) the signal stops the run at once: there is no training state to save.
    A second signal stops at once too.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.signum: int | None = None
        self.saved: Path | None = None
        self._fitting = False
        self._forwarding = False
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
        if self._forwarding:  # Lightning's handler calls ours too: we are already stopping
            return
        lightning_handler = signal.getsignal(signal.SIGTERM)
        lightning_stops = (
            self._fitting and callable(lightning_handler) and lightning_handler != self._on_signal
        )
        if self.signum is not None or not lightning_stops:
            self.signum = self.signum or signum
            raise Interrupted(signum)
        self.signum = signum
        log.warning(
            "%s received: stopping after the current step and saving a checkpoint "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )
        if signum != signal.SIGTERM:
            # Lightning's handler (registered during fit, ours composed into it) sets the flag
            # its loops check at each step boundary
            self._forwarding = True
            try:
                lightning_handler(signal.SIGTERM, frame)
            finally:
                self._forwarding = False

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self._fitting = True

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        self._fitting = False

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        stopping = self._fitting and isinstance(exception, SIGTERMException)
        self._fitting = False
        if stopping:
            self.saved = self.checkpoint_dir / "last.ckpt"
            trainer.save_checkpoint(self.saved)


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
