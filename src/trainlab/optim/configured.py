"""`configure_optimizers` for a module built from config: the optimizer partial over the
module's parameter groups, the schedule sized from Lightning's own count of steps, and a
record of what was built."""

from __future__ import annotations

import functools
import logging
from typing import Any

from torch.optim import Optimizer

from trainlab.callbacks.batch_size_warmup import stepping_batches
from trainlab.optim.groups import build_optimizer
from trainlab.optim.registry import settings_of
from trainlab.optim.roles import remember_layout
from trainlab.optim.schedule_free import is_schedule_free

log = logging.getLogger(__name__)


class ConfiguredOptimizers:
    """`configure_optimizers` for a LightningModule built from config.

    The module holds `optimizer_factory` (a partial), `scheduler_spec` (a SchedulerSpec or
    None) and `weight_decay_groups` (or `hparams.weight_decay_groups`); this builds the
    optimizer over the module's parameter groups, records what was built (before a scheduler
    rewrites the lr: OneCycleLR does at once) in `optimizer_built`, and sizes the schedule
    from Lightning's own count of optimizer steps (or epochs), or a batch-size warmup's.
    """

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # before a strategy wraps the module: FSDP would leave only flat shards to look at
        remember_layout(self)

    def configure_optimizers(self):
        factory = self.optimizer_factory
        if getattr(self, "in_range_test", False) and "warmup" in getattr(factory, "keywords", {}):
            # the LR range test sets every step's lr itself: an optimizer's own warmup
            # (schedule-free's) would scale it down, and the curve's lr axis would be wrong
            factory = functools.partial(factory, warmup=0)
        optimizer = build_optimizer(
            self,
            factory,
            decay_groups_of(self),
            total_steps=stepping_batches(self.trainer),
        )
        if is_schedule_free(optimizer):
            # ready to step, as any torch optimizer is: Lightning's LR range test runs its steps
            # with only its own callback, so trainlab.callbacks.schedule_free cannot switch it
            optimizer.train()
        built = {**describe_optimizer(optimizer), "settings": settings_of(self.optimizer_factory)}
        if built != getattr(self, "optimizer_built", None):  # once, not per LR-test trial
            log.info("optimizer: %s", built)
        self.optimizer_built = built
        spec = self.scheduler_spec
        if spec is None:
            return optimizer
        if spec.interval == "step":
            length = stepping_batches(self.trainer)
        else:
            length = self.trainer.max_epochs
        return {"optimizer": optimizer, "lr_scheduler": spec.lightning_config(optimizer, length)}


def decay_groups_of(module) -> str:
    """How the module's weight decay is split: its own attribute (TaskModule keeps it), else
    the saved hyperparameter of a module of its own, else auto."""
    groups = getattr(module, "weight_decay_groups", None)
    return groups if groups is not None else module.hparams.get("weight_decay_groups", "auto")


def describe_optimizer(optimizer: Optimizer) -> dict[str, Any]:
    """Class and per-group hyperparameters of an optimizer as built: what really trains."""
    groups = []
    for group in optimizer.param_groups:
        described = {"name": group["name"]} if "name" in group else {}
        described.update(
            lr=float(group["lr"]),
            weight_decay=float(group.get("weight_decay", 0.0)),
            params=sum(p.numel() for p in group["params"]),
        )
        if "lr_multiplier" in group:  # μP's (trainlab.optim.mup): lr is already multiplied
            described["lr_multiplier"] = float(group["lr_multiplier"])
        groups.append(described)
    return {"class": type(optimizer).__name__, "param_groups": groups}
