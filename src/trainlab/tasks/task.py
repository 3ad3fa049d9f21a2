"""A task as the `task` config group describes it: what kind of learning, with which loss,
scored by which metrics, optimizing which objective. The data set picks its task
(`conf/data/*.yaml` overrides `task`), so `data=diabetes` alone trains a regression."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from trainlab.checks import ConfigError
from trainlab.data.spec import KINDS


@dataclass
class Task:
    """`kind`: multiclass, binary, regression, language_model (or a fork's own). `loss`:
    the criterion (None: the kind's usual one). `metrics`: names scored on val and test each
    epoch (trainlab.tasks.metrics). `objective`: the metric a run optimizes unless
    `optimized_metric` says otherwise. `num_classes`: for multi-class metrics."""

    kind: str
    loss: nn.Module | None = None
    metrics: Sequence[str] = ()
    objective: str | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ConfigError(f"task.kind={self.kind!r}: a name, e.g. {', '.join(KINDS)}")
        self.metrics = tuple(str(m) for m in self.metrics)
        if self.loss is None:
            self.loss = default_loss(self.kind)


def default_loss(kind: str) -> nn.Module:
    if kind == "binary":
        return nn.BCEWithLogitsLoss()
    if kind == "regression":
        return nn.MSELoss()
    return nn.CrossEntropyLoss()
