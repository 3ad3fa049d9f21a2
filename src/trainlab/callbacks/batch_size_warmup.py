"""`batch_size_warmup`: Lightning's GradientAccumulationScheduler, scheduled by optimizer step.

Lightning's scheduler changes `trainer.accumulate_grad_batches` at the start of an epoch; a
warmup over a fraction of a one-epoch run, or over a number of steps, needs it between steps.
This subclass keeps its checks (automatic optimization, no DeepSpeed, no accumulation set on
the Trainer as well) and sets the accumulation at the first micro batch of each optimizer step
from the schedule trainlab.batch_warmup worked out, which is a function of the step alone, so
a resumed run picks up where it stopped. Under lr_scaling the lr of each step follows the rule
at the step's batch: it is scaled just for the optimizer's step (step pre- and post-hooks), so
a scheduler's own arithmetic never sees it and the logged `lr-*` stays the schedule's at
batch_size; `train/batch_size` (and under lr_scaling `train/lr_factor`, the lr rule's factor
on the logged lr) are logged at each step.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import GradientAccumulationScheduler

from trainlab.batch_warmup import (
    Schedule,
    lr_factor,
    planned_warmup,
    warming_up,
    warmup_record,
)
from trainlab.checks import ConfigError
from trainlab.plan import Plan, micro_batches_per_epoch

log = logging.getLogger(__name__)


class BatchSizeWarmup(GradientAccumulationScheduler):
    """Grows the optimizer batch from micro_batch_size x world size to the plan's batch_size."""

    def __init__(self, warmup: float | int, plan: Any) -> None:
        super().__init__(scheduling={0: 1})  # the epoch schedule is unused: ours is by step
        self.warmup, self.plan = warmup, plan
        self.schedule: Schedule | None = None
        self._factor = 1.0  # the lr rule's factor at the current batch
        self._saved_lrs: list[float] = []
        self._handles: list[Any] = []

    def going_to_accumulate_grad_batches(self) -> bool:
        return True

    def schedule_for(self, trainer: L.Trainer) -> Schedule:
        """Worked out once Lightning knows the micro batches per epoch (it does when it sizes
        the schedulers: trainlab.optim.configured asks for the steps through this)."""
        if self.schedule is None:
            batches = trainer.num_training_batches
            if not math.isfinite(batches):
                raise ConfigError(
                    "batch_size_warmup needs to know the micro batches per epoch, and this "
                    "data has no length (an iterable dataset): set batch_size_warmup=null."
                )
            self.schedule = planned_warmup(
                self.warmup, self.plan, int(batches), trainer.max_epochs, trainer.max_steps
            )
            # the plan metrics.json records: now with the loop's own count of micro batches
            self.plan.batch_size_warmup = warmup_record(self.warmup, self.plan, self.schedule)
        return self.schedule

    # --- hooks --------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # Lightning's checks of the combination
        accumulation = self.schedule_for(trainer).accumulation_at(trainer.global_step)
        self._use(trainer, accumulation)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if done % accumulation:
            log.warning(
                "batch_size_warmup: this run resumes from a checkpoint saved between the micro "
                "batches of a step (%d micro batches into the epoch, accumulation %d): its "
                "steps from here on are not the plan's",
                done,
                accumulation,
            )
        for optimizer in trainer.optimizers:
            self._handles += [
                optimizer.register_step_pre_hook(self._scale_lr),
                optimizer.register_step_post_hook(self._restore_lr),
            ]

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self._use(trainer, self.schedule_for(trainer).accumulation_at(trainer.global_step))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx % trainer.accumulate_grad_batches:
            return  # inside a step: its accumulation is set
        self._use(trainer, self.schedule_for(trainer).accumulation_at(trainer.global_step))
        # the step's own micro batches: an epoch's last step may have fewer
        micro_batches = min(
            trainer.accumulate_grad_batches, trainer.num_training_batches - batch_idx
        )
        batch_size = micro_batches * self._per_micro_batch
        pl_module.log("train/batch_size", float(batch_size), on_step=True, on_epoch=False)
        if self.plan.lr_scaling != "none":  # what the logged schedule's lr is multiplied by
            pl_module.log("train/lr_factor", self._factor, on_step=True, on_epoch=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hooks()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error) -> None:
        self._remove_hooks()

    # --- the accumulation and the lr rule -----------------------------------------------------
    @property
    def _per_micro_batch(self) -> int:
        return self.plan.micro_batch_size * self.plan.world_size

    def _use(self, trainer: L.Trainer, accumulation: int) -> None:
        trainer.accumulate_grad_batches = accumulation
        self._factor = lr_factor(self.plan, accumulation * self._per_micro_batch)

    def _scale_lr(self, optimizer, args, kwargs) -> None:
        self._saved_lrs = [group["lr"] for group in optimizer.param_groups]
        if self._factor != 1.0:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * self._factor

    def _restore_lr(self, optimizer, args, kwargs) -> None:
        for group, lr in zip(optimizer.param_groups, self._saved_lrs, strict=False):
            group["lr"] = lr  # exactly as the scheduler left it

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def with_batch_size_warmup(cfg: Any, trainer: L.Trainer, plan: Plan, train_size: int) -> Plan:
    """The plan with its warmup worked out from the data's size (refused where it cannot
    grow or would not end before the run does), and the trainer with the callback that
    follows it; without `batch_size_warmup`, both as they are."""
    warmup = cfg.get("batch_size_warmup")
    if not warming_up(warmup):
        return plan
    batches = limited(micro_batches_per_epoch(train_size, plan), trainer.limit_train_batches)
    schedule = planned_warmup(warmup, plan, batches, trainer.max_epochs, trainer.max_steps)
    plan = Plan(**{**plan.as_dict(), "batch_size_warmup": warmup_record(warmup, plan, schedule)})
    trainer.accumulate_grad_batches = 1  # as Lightning's scheduler wants the Trainer set
    # first, so that every other callback's hooks see the accumulation of the step they are in
    trainer.callbacks.insert(0, BatchSizeWarmup(warmup, plan))
    return plan


def limited(batches: int, limit: int | float | None) -> int:
    """The micro batches per epoch under `trainer.limit_train_batches`, counted as Lightning
    counts them (a whole number caps them, a fraction keeps that share, rounded down)."""
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(batches, limit)
    if isinstance(limit, float):
        return int(batches * limit)
    return batches


def batch_size_warmup_of(trainer: L.Trainer) -> BatchSizeWarmup | None:
    return next((c for c in trainer.callbacks if isinstance(c, BatchSizeWarmup)), None)


def stepping_batches(trainer: L.Trainer) -> int | float:
    """The optimizer steps the run will take: Lightning's estimate, or under a batch-size
    warmup (whose early steps take fewer micro batches) the warmup's own count."""
    estimated = trainer.estimated_stepping_batches  # also sets up the training data
    warmup = batch_size_warmup_of(trainer)
    return estimated if warmup is None else warmup.schedule_for(trainer).optimizer_steps
