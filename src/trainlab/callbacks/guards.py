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
import torch
from lightning.pytorch.callbacks import Callback, ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from trainlab.callbacks.checkpointing import LastCheckpoint, stops_after_this_epoch
from trainlab.checks import ConfigError

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
        self._on_cuda: bool | None = None

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._on_cuda = None  # the device is read again for each Trainer this runs under

    def _update(self, trainer: L.Trainer, pl_module, batch, iter_num: int) -> None:
        """Lightning's update after every batch, less its per-batch `torch.inference_mode`
        context (~2 µs; the batch size and length functions count, they do not
        differentiate) and its repeated enum-keyed dict lookups (each a Python-level hash)."""
        stage = trainer.state.stage
        if self._on_cuda is None:
            self._on_cuda = trainer.strategy.root_device.type == "cuda"
        if self._on_cuda:
            torch.cuda.synchronize()  # Lightning's: the clock must see the batch finished
        elapsed = time.perf_counter() - self._t0s[stage]
        if self._module_has_flops is None:
            self._module_has_flops = hasattr(pl_module, "flops_per_batch")
            if not self._module_has_flops:  # Lightning's warning
                rank_zero_warn(
                    "When using the `ThroughputMonitor`, you need to define a `flops_per_batch`"
                    f" attribute or property in {type(pl_module).__name__} to compute the FLOPs."
                )
        lengths = None
        if self.length_fn is not None:
            lengths = self._lengths[stage] = self._lengths[stage] + self.length_fn(batch)
        samples = self._samples[stage] = self._samples[stage] + self.batch_size_fn(batch)
        batches = self._batches[stage] = self._batches[stage] + 1
        flops = pl_module.flops_per_batch if self._module_has_flops else None
        self._throughputs[stage].update(
            time=elapsed, batches=batches, samples=samples, lengths=lengths, flops=flops
        )

    @property
    def summary(self) -> dict[str, float]:
        """The training numbers over the last window, computed when asked (at epoch ends and
        for metrics.json) rather than after every step: {} before the window is full."""
        throughput = self._throughputs.get(RunningStage.TRAINING)
        try:
            computed = throughput.compute() if throughput is not None else {}
        except IndexError:  # no training batch yet (or not rank 0, where nothing is counted)
            computed = {}
        return {name: float(value) for name, value in computed.items()}


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
    of a validation, whose state a checkpoint cannot hold), on every rank at the same step;
    at an epoch's last step, after that epoch's validation, at the epoch's end (in the last
    epoch the run then finishes). Lightning's own SIGTERM handler would stop after any batch,
    so the training loop takes SIGTERM back from it. Outside the training loop (data setup,
    sanity check, test) a signal stops the run at once: there is no training state to save.
    A second signal stops at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.signum: int | None = None
        self.saved: Path | None = None
        self._training = False
        self._step_before = 0
        self._stop_at_epoch_end = False
        self._stopped_at_epoch_end = False
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
        if self._stopped_at_epoch_end:
            self._stopped_at_epoch_end = False
            last = [c for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
            if not last:  # callbacks without it: saved here, every rank taking part
                self._save_and_stop(trainer)
            self.saved = Path(last[0].dirpath) / "last.ckpt"  # saved at the epoch's end
            raise Interrupted(self.signum or signal.SIGTERM)
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
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # the epoch's last step: stop after its validation, at the epoch's end. Saved
            # here, the checkpoint would hold an epoch whose batches are all done but whose
            # validation never ran, and Lightning resumes past it without validating
            self._stop_at_epoch_end = True
            return
        self._save_and_stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self._stop_at_epoch_end:
            return
        self._stop_at_epoch_end = False
        if stops_after_this_epoch(trainer):
            return  # the last epoch: the run finishes (on_train_end says so)
        # Lightning ends fit after this epoch: last.ckpt is saved at its end, after the
        # module's epoch-end hook (its train means logged), as at any stop; then on_train_end
        # raises Interrupted
        trainer.should_stop = True
        self._stopped_at_epoch_end = True

    def _save_and_stop(self, trainer: L.Trainer) -> None:
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


class ValidateFinalWeights(Callback):
    """Training that ends after optimizer steps no validation saw validates once more, inside
    fit, so that the best-so-far metric, the best checkpoint and the test see the final weights.

    Training ends at the step that reaches `max_steps`, at the last batch of the last epoch,
    or when something asks it to stop (`max_time`'s Timer, early stopping, any callback
    setting `trainer.should_stop`). At that step this sets `trainer.should_stop`, which makes
    Lightning validate after the batch unless it validates there anyway (an epoch end, a
    `val_check_interval` batch): never twice. An epoch that `check_val_every_n_epoch` skips is
    validated all the same. A stop asked for in the middle of gradient accumulation waits for
    the step (every rank agrees: they share the step count, and the Timer's decision is
    rank 0's). With validation off (`limit_val_batches=0`, no validation data) nothing can be
    validated: a `val/` objective is refused, anything else trains with a warning.
    """

    def __init__(self, objective: str | None = None) -> None:
        self.objective = objective
        self.validated_step: int | None = None  # global step of the last validation in fit
        self._step_before = 0
        self._stop_pending = False  # a stop asked for during accumulation
        self._every_n_epoch: int | None = None
        self._lifted = False  # check_val_every_n_epoch set aside for this one validation

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.enable_validation:
            return
        why = (
            f"trainer.limit_val_batches={trainer.limit_val_batches}"
            if not trainer.limit_val_batches > 0
            else "the data has no validation split"
        )
        if self.objective is not None and str(self.objective).startswith("val/"):
            raise ConfigError(
                f"Validation is off ({why}), but optimized_metric={self.objective} is measured "
                "by validation: no run could report it, keep a best checkpoint or validate "
                "its final weights. Leave trainer.limit_val_batches at null (or > 0), or "
                "optimize a test/ metric (optimized_metric=test/...)."
            )
        log.warning(
            "validation is off (%s): no val/ metrics, and the test uses the final weights", why
        )

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._step_before:  # accumulating: no optimizer step yet
            if trainer.should_stop:
                trainer.should_stop = False  # asked again at the step, after the whole step
                self._stop_pending = True
            return
        loop = trainer.fit_loop
        epochs = trainer.max_epochs
        last_epoch = epochs is not None and epochs > 0 and trainer.current_epoch + 1 >= epochs
        ending = (
            (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
            or self._stop_pending
            or trainer.should_stop
            or (last_epoch and batch_idx + 1 >= trainer.num_training_batches)
        )
        if not ending or not trainer.enable_validation or not loop._can_stop_early:
            return
        trainer.should_stop = True  # Lightning validates after a batch that asks to stop
        every = trainer.check_val_every_n_epoch
        if every is not None and (trainer.current_epoch + 1) % every:
            self._every_n_epoch, self._lifted = every, True
            trainer.check_val_every_n_epoch = None  # only for this validation

    def _restore(self, trainer: L.Trainer) -> None:
        if self._lifted:
            trainer.check_val_every_n_epoch = self._every_n_epoch
            self._lifted = False

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self._restore(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.validated_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._restore(trainer)
        unseen = trainer.global_step - (self.validated_step or 0)
        if trainer.enable_validation and unseen > 0:
            log.warning(
                "the last %d optimizer steps were not validated (min_epochs or min_steps not "
                "met when training ended?): val/ metrics and the best checkpoint are from "
                "step %s",
                unseen,
                self.validated_step,
            )
