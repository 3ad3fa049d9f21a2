"""The run's two checkpoints, written as rarely as resume and the record allow.

A save is a full training state (weights, optimizer, loops, RNG, callbacks): ~5 ms for the
digits MLP, whose epoch is 19 steps of ~1 ms. Saving last.ckpt at every one of 20 sub-second
epochs, and the best checkpoint at each improvement, was a fifth of the training loop.

`LastCheckpoint`: `checkpoints/last.ckpt`, what `resume=<run dir>` continues from, saved

- after an optimizer step, when `every_n_train_steps` divides the step count, or once
  `every_s` seconds have passed since the last save (rank 0's clock decides for all ranks);
  a save due at an epoch's last step waits for the epoch's end, after its validation, so
  it records that validation's improvement and early-stopping state;
- at the end of the epoch where training stops (the last one, early stopping, max_steps), so
  a finished run's last.ckpt holds its final state; at the end of training otherwise;
- on SIGINT/SIGTERM (trainlab.callbacks.guards.StopOnSignal), SLURM's requeue signal
  (Lightning's hpc_ckpt).

A kill -9 loses at most every_s seconds plus one step of training (or every_n_train_steps
steps, if that comes first; a trigger at 0 is off), and the resume from the save before it
is exact (the loader and the RNG states travel with it). Saves land right after an optimizer
step, never between the micro batches of an accumulated one, whose gradients a checkpoint
does not hold.

`BestModelCheckpoint`: Lightning's ModelCheckpoint (monitor, top-k), except that on one
process or DDP over CPU tensors (a small model's case), with save_top_k=1, an improvement is
kept in memory, a copy of what would have been written, and written when any other
checkpoint is saved (so last.ckpt never names a best file that is not there), when training
ends, and on an exception. Sub-second epochs improve often; only the last improvement before
each of those moments reaches the disk. On a GPU, under FSDP or DeepSpeed (sharded,
collective saves) and for checkpoints over `keep_in_memory_mb` or when several are kept
(save_top_k != 1), each improvement is written at once, as Lightning does. On an exception
the waiting one is written and the files it replaced stay (the last.ckpt on disk may name
one).
"""

from __future__ import annotations

import time
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy


class CachedStateKey:
    """ModelCheckpoint's state_key formats a dict at every call, and Lightning asks for it at
    every hook of every step (its profiler's label): computed once, as it never changes."""

    @property
    def state_key(self) -> str:
        key = self.__dict__.get("_cached_state_key")
        if key is None:
            key = self.__dict__["_cached_state_key"] = super().state_key
        return key


class LastCheckpoint(CachedStateKey, ModelCheckpoint):
    """ModelCheckpoint without a monitor writing `<dirpath>/last.ckpt` on the triggers above
    (0 turns a trigger off)."""

    def __init__(
        self,
        dirpath: str,
        every_n_train_steps: int = 0,
        every_s: float = 0,
        save_weights_only: bool = False,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            every_n_epochs=0,  # epoch ends do not save by themselves: the triggers are ours
            save_weights_only=save_weights_only,
            verbose=verbose,
        )
        self.every_steps = int(every_n_train_steps or 0)
        self.every_s = float(every_s or 0)
        self._step_before = -1
        self._saved_at = time.monotonic()
        self._due_at_epoch_end = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at = time.monotonic()

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        step = trainer.global_step
        if step == self._step_before:
            return  # accumulating: no optimizer step taken yet
        due = bool(self.every_steps) and step % self.every_steps == 0
        if self.every_s and not due:
            due = time.monotonic() - self._saved_at >= self.every_s
            if trainer.world_size > 1:  # every rank saves at the same step, or none does
                due = trainer.strategy.broadcast(due)
        if not due or self._should_skip_saving_checkpoint(trainer):
            return  # not yet, sanity check, or saved at this step
        if ends_the_epoch(trainer):
            self._due_at_epoch_end = True  # after the epoch's validation, which it records
        else:
            self.save_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due_at_epoch_end or stops_after_this_epoch(trainer):
            self.save_unless_saved(trainer)
        self._due_at_epoch_end = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # no monitor: nothing to do after a validation

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_unless_saved(trainer)  # stopped by something else than the epoch's end

    def save_unless_saved(self, trainer: L.Trainer) -> None:
        """Save, unless this step was saved already (or it is the sanity check)."""
        if not self._should_skip_saving_checkpoint(trainer):
            self.save_now(trainer)

    def save_now(self, trainer: L.Trainer) -> None:
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        self._saved_at = time.monotonic()


def ends_the_epoch(trainer: L.Trainer) -> bool:
    """Whether the optimizer step just taken is the epoch's last (its last batch, or
    max_steps reached): the epoch's validation is still to come."""
    max_steps = trainer.max_steps
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or (
        max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps
    )


def stops_after_this_epoch(trainer: L.Trainer) -> bool:
    """Whether the fit loop ends with the epoch now ending (a save here holds the final
    state, before on_train_end, where an EMA copies its average into the model)."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    return (
        trainer.should_stop
        or (max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
        or (max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps)
    )


class BestModelCheckpoint(CachedStateKey, ModelCheckpoint):
    """ModelCheckpoint whose writes of small CPU checkpoints wait in memory (module text)."""

    def __init__(self, *args, keep_in_memory_mb: float = 256, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keep_in_memory_bytes = keep_in_memory_mb * 2**20
        self._pending: tuple[dict[str, Any], str] | None = None
        self._stale: list[str] = []
        self._dumping = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, *args, **kwargs) -> None:
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            return  # saved after validations only: Lightning returns too, after ~10 µs of checks
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not isinstance(trainer.strategy, SingleDeviceStrategy | DDPStrategy):
            return super()._save_checkpoint(trainer, filepath)
        self._dumping = True  # its own dump must not write what is pending
        try:
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(self.save_weights_only)
        finally:
            self._dumping = False
        # only one improvement can wait: with top-k > 1 each one stays among the k kept
        copy = snapshot(checkpoint, self.keep_in_memory_bytes) if self.save_top_k == 1 else None
        held = copy is not None
        if trainer.world_size > 1:  # every rank holds, or every rank writes (a collective)
            held = trainer.strategy.reduce_boolean_decision(held, all=True)
        self._pending = (copy if held else checkpoint, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if not held:  # on a GPU, too large to hold, or top-k > 1: written now, as Lightning
            self.write_pending(trainer)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self._pending is None:
            return super()._remove_checkpoint(trainer, filepath)
        self._stale.append(filepath)  # only once the better one is on disk

    def write_pending(self, trainer: L.Trainer, failing: bool = False) -> None:
        """Write the improvement waiting in memory, then remove the files it replaced
        (unless training is failing: the last.ckpt on disk may still name one of them, and
        the other ranks may not reach a barrier)."""
        if self._pending is None:
            return
        checkpoint, filepath = self._pending
        self._pending = None
        trainer.strategy.save_checkpoint(checkpoint, filepath)
        self._after_write(trainer, filepath)
        if failing:
            return
        trainer.strategy.barrier("BestModelCheckpoint")
        stale, self._stale = self._stale, []
        for path in stale:
            if path != filepath and path != self.best_model_path:
                trainer.strategy.remove_checkpoint(path)

    def _after_write(self, trainer: L.Trainer, filepath: str) -> None:
        if trainer.is_global_zero:  # what ModelCheckpoint tells the loggers after a save
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if not self._dumping:  # another checkpoint, which records this one's path, is saved
            self.write_pending(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.write_pending(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self.write_pending(trainer, failing=True)


def snapshot(checkpoint: dict[str, Any], limit_bytes: float) -> dict[str, Any] | None:
    """A copy of a dumped checkpoint that later training cannot change (the dump shares the
    storage of the live weights and optimizer state, and some of its dicts are live too),
    or None when a tensor is not on the CPU or the tensors exceed `limit_bytes` in all."""
    size = 0

    def copy(value: Any) -> Any:
        nonlocal size
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                raise _NotKept
            size += value.numel() * value.element_size()
            if size > limit_bytes:
                raise _NotKept
            return value.detach().clone()
        if isinstance(value, dict):  # dict, OrderedDict, defaultdict: keep the type
            copied = value.copy()
            for key, item in value.items():
                copied[key] = copy(item)
            return copied
        if isinstance(value, list):
            return [copy(item) for item in value]
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(copy(item) for item in value)
        return value  # numbers, text, None: immutable

    try:
        return copy(checkpoint)
    except _NotKept:
        return None


class _NotKept(Exception):
    pass
