"""An image classifier as a LightningModule: loss, metrics and optimizer wiring.

The network, the optimizer and the scheduler arrive already chosen (Hydra instantiates
them from `conf/model/`, `conf/optimizer/`, `conf/scheduler/`); this class only says how
they fit together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from trainlab.optim import ConfiguredOptimizers, SchedulerSpec
from trainlab.tasks.epoch_metrics import EpochSums, LogsEpochMeans
from trainlab.tasks.lean import LeanHooks

log = logging.getLogger(__name__)


class Classifier(LeanHooks, ConfiguredOptimizers, LogsEpochMeans, L.LightningModule):
    """Classification (cross-entropy by default); accuracy per split and the best val accuracy.
    It logs train/ val/ test/ loss and acc, and val/acc_best (`logged_metrics`)."""

    # read by the ThroughputMonitor; None: no FLOP count, so no MFU for this small model
    flops_per_batch = None

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: SchedulerSpec | None = None,
        loss: nn.Module | None = None,
        num_classes: int = 10,
        weight_decay_groups: str = "auto",
    ) -> None:
        super().__init__()
        # plain values only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "loss"])
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_spec = scheduler
        self.optimizer_built: dict[str, Any] | None = None
        self.criterion = loss if loss is not None else nn.CrossEntropyLoss()

        self.train_metrics = EpochSums("loss", "acc")
        self.val_metrics = EpochSums("loss", "acc")
        self.test_metrics = EpochSums("loss", "acc")
        # val/acc_best, the highest val/acc so far, unless the run's objective says otherwise
        self.keep_best("acc", "max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, metrics: EpochSums) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        metrics.add(len(y), loss=loss, acc=(logits.argmax(dim=1) == y).float().mean())
        return loss
