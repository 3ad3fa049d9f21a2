"""Supervised learning from (input, target) batches: multi-class and binary classification
and regression, one module driven by the `task` config (loss, metrics, objective).

- multiclass: one logit per class, cross-entropy; train/acc as a running mean.
- binary: one logit, binary cross-entropy with logits on 0/1 targets; train/acc at p = 0.5.
- regression: one output per target, mean squared error (the loss is train/mse's twin).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainlab.checks import ConfigError
from trainlab.data.spec import DataSpec
from trainlab.objective import implied_direction
from trainlab.optim import SchedulerSpec
from trainlab.tasks.base import TaskModule
from trainlab.tasks.epoch_metrics import EpochSums
from trainlab.tasks.metrics import build_scores
from trainlab.tasks.task import Task

KINDS = ("multiclass", "binary", "regression")


class Supervised(TaskModule):
    """Logs train/loss (and train/acc when classifying), val/ and test/ loss plus the task's
    metrics, and the best-so-far of one of them (the objective's, `keep_best`)."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        task: Task,
        scheduler: SchedulerSpec | None = None,
        weight_decay_groups: str = "auto",
    ) -> None:
        super().__init__(net, optimizer, scheduler, weight_decay_groups)
        if task.kind not in KINDS:
            raise ConfigError(
                f"task={task.kind} needs its own module (model=gpt for a language model); "
                f"this model's {type(self).__name__} learns {', '.join(KINDS)} tasks"
            )
        # plain values only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "task"])
        self.kind = task.kind
        self.criterion = task.loss
        classifying = self.kind != "regression"
        self.train_metrics = EpochSums("loss", "acc") if classifying else EpochSums("loss")
        self.val_metrics = EpochSums("loss")
        self.test_metrics = EpochSums("loss")
        self.val_scores = build_scores(self.kind, task.metrics, task.num_classes)
        self.test_scores = self.val_scores.clone()
        # the best-so-far: the first metric's (the run's objective may choose another)
        first = task.metrics[0] if task.metrics else "loss"
        self.keep_best(first, "min" if implied_direction(first) == "minimize" else "max")

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The network's outputs in float32, one logit (or value) per sample squeezed to (N,)
        for binary and single-target regression."""
        out = self(x).float()
        if self.kind != "multiclass" and out.ndim == 2 and out.shape[1] == 1:
            out = out.squeeze(1)
        return out

    def _step(self, batch, sums: EpochSums, scores) -> torch.Tensor:
        x, y = batch
        out = self._outputs(x)
        loss = self.criterion(out, y)
        if self.kind == "multiclass":
            sums.add(len(y), loss=loss, acc=(out.argmax(dim=1) == y).float().mean())
            if scores is not None:
                scores.update(out.softmax(dim=1), y)
        elif self.kind == "binary":
            sums.add(len(y), loss=loss, acc=((out > 0) == (y > 0.5)).float().mean())
            if scores is not None:
                scores.update(out.sigmoid(), y.long())
        else:
            sums.add(len(y), loss=loss)
            if scores is not None:
                scores.update(out, y)
        return loss

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Per-sample columns: the target (when the batch has one), the prediction, and for
        classification the probabilities; regression in the data's own units when the
        datamodule standardized its targets (`target_mean`, `target_std`)."""
        x, *rest = batch
        out = self._outputs(x)
        columns: dict[str, torch.Tensor] = {}
        if self.kind == "multiclass":
            prob = out.softmax(dim=1)
            columns.update(prediction=prob.argmax(dim=1), prob=prob)
        elif self.kind == "binary":
            prob = out.sigmoid()
            columns.update(prediction=(prob > 0.5).long(), prob=prob)
        else:
            datamodule = getattr(self.trainer, "datamodule", None)
            mean = getattr(datamodule, "target_mean", None)
            std = getattr(datamodule, "target_std", None)
            unscale = (lambda v: v * std.to(v) + mean.to(v)) if mean is not None else None
            columns["prediction"] = unscale(out) if unscale else out
            if rest:
                rest = [unscale(rest[0]) if unscale else rest[0]]
        if rest:
            target = rest[0].long() if self.kind == "binary" else rest[0]
            columns = {"target": target, **columns}
        return columns

    def check_fits(self, spec: DataSpec, data_name: str) -> None:
        """One forward of two zero samples shaped like the data: the network takes them and
        gives one output per class (one logit for binary) or per regression target."""
        if spec.task != self.kind:
            raise ConfigError(
                f"task={self.kind} does not fit data={data_name}, which is {spec.task}: leave "
                "`task` to the data's config (it picks its own), or choose data of that kind"
            )
        probe = torch.zeros(2, *spec.input_shape, device=self.device)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self.net(probe)
        except (RuntimeError, ValueError, TypeError) as err:
            raise ConfigError(
                f"model.net ({type(self.net).__name__}) cannot take data={data_name}'s inputs "
                f"of shape {spec.input_shape}: {err}. Size its input from the data, e.g. "
                "in_features: ${data_spec:in_features} (README, Fork it)"
            ) from err
        finally:
            self.train(was_training)
        wanted = spec.num_outputs
        shape = tuple(out.shape)
        fine = shape == (2, wanted) or (wanted == 1 and self.kind != "multiclass" and shape == (2,))
        if not fine:
            raise ConfigError(
                f"model.net ({type(self.net).__name__}) gives outputs of shape {shape[1:]} per "
                f"sample, but data={data_name} ({spec.described()}) needs {wanted}: size its "
                "last layer with num_outputs: ${data_spec:num_outputs} (README, Fork it)"
            )
