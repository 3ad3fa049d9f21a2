"""The LightningModule every task shares: a network, the optimizer and schedule it trains
with (arriving already chosen, from `conf/optimizer/` and `conf/scheduler/`), the step and
epoch hooks, epoch metrics summed on the device, and the best-so-far of the objective.

A task fills in `_step(batch, sums, scores)` (one batch: its loss, added to the epoch sums
and scores) and, optionally, `predict_step` and `check_fits`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from trainlab.data.spec import DataSpec
from trainlab.models.width import parametrization_of
from trainlab.optim import ConfiguredOptimizers, SchedulerSpec
from trainlab.tasks.epoch_metrics import LogsEpochMeans
from trainlab.tasks.lean import LeanHooks


class TaskModule(LeanHooks, ConfiguredOptimizers, LogsEpochMeans, L.LightningModule):
    """`net` is a plain nn.Module; `optimizer` a partial taking the parameter groups;
    `scheduler` a SchedulerSpec or None; `weight_decay_groups` how decay is split
    (trainlab.optim). Subclasses set `train_metrics`, `val_metrics`, `test_metrics`
    (EpochSums), optionally `val_scores`/`test_scores`, and call `keep_best`."""

    # read by the ThroughputMonitor; None: no FLOP count, so no MFU for this model
    flops_per_batch: int | None = None

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: SchedulerSpec | None = None,
        weight_decay_groups: str = "auto",
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_spec = scheduler
        self.optimizer_built: dict[str, Any] | None = None
        self.weight_decay_groups = weight_decay_groups  # read by configure_optimizers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # μP's multipliers live in the forward pass: a checkpoint says what it was trained with
        checkpoint["parametrization"] = parametrization_of(self).as_plan()

    def check_fits(self, spec: DataSpec, data_name: str) -> None:
        """Raise a ConfigError when the network cannot take the data (`spec`) or gives the
        wrong number of outputs; called before any training. The base checks nothing."""
