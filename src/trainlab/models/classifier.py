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
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from trainlab.optim import ConfiguredOptimizers, SchedulerSpec

log = logging.getLogger(__name__)


class Classifier(ConfiguredOptimizers, L.LightningModule):
    """Classification (cross-entropy by default); accuracy per split and the best val accuracy."""

    # every name this module logs: `optimized_metric` is checked against it before training
    logged_metrics = (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/loss",
        "test/acc",
    )

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

        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shared_step(self, batch):
        x, y = batch
        logits = self(x)
        return self.criterion(logits, y), logits.argmax(dim=1), y

    def on_train_start(self) -> None:
        # the sanity check ran validation on untrained weights: forget it
        self.val_loss.reset()
        self.val_acc.reset()
        self.val_acc_best.reset()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, preds, targets = self._shared_step(batch)
        self.train_loss(loss)
        self.train_acc(preds, targets)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, preds, targets = self._shared_step(batch)
        self.val_loss(loss)
        self.val_acc(preds, targets)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, preds, targets = self._shared_step(batch)
        self.test_loss(loss)
        self.test_acc(preds, targets)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
