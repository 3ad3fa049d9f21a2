"""How a learning-rate scheduler is described in config and handed to Lightning.

A scheduler option in `conf/scheduler/` is a `SchedulerSpec`: the torch scheduler as a
partial (everything but the optimizer), plus what Lightning needs to step it
(`interval`, `frequency`, `monitor`). Schedules whose length must be known up front name
the argument to fill with `length_arg`; it receives the run's length in the scheduler's
own unit (optimizer steps or epochs), so no config has to guess it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer

INTERVALS = ("step", "epoch")


@dataclass
class SchedulerSpec:
    factory: Callable[..., Any]
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    length_arg: str | None = None

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise ValueError(
                f"scheduler interval={self.interval!r} is not one of {INTERVALS}: it says "
                "whether the scheduler steps after every optimizer step or every epoch."
            )

    def lightning_config(self, optimizer: Optimizer, total_intervals: int) -> dict[str, Any]:
        """The `lr_scheduler` dict Lightning expects from `configure_optimizers`.

        `total_intervals` is the run's length in this scheduler's unit; it is passed as
        `length_arg` (e.g. OneCycleLR's `total_steps`, CosineAnnealingLR's `T_max`).
        """
        kwargs = {}
        if self.length_arg is not None:
            kwargs[self.length_arg] = max(1, total_intervals // self.frequency)
        config = {
            "scheduler": self.factory(optimizer, **kwargs),
            "interval": self.interval,
            "frequency": self.frequency,
        }
        if self.monitor is not None:
            config["monitor"] = self.monitor
        return config


def describe_optimizer(optimizer: Optimizer) -> dict[str, Any]:
    """Class and per-group hyperparameters of an optimizer as built: what really trains."""
    groups = []
    for group in optimizer.param_groups:
        groups.append(
            {
                "lr": float(group["lr"]),
                "weight_decay": float(group.get("weight_decay", 0.0)),
                "params": sum(p.numel() for p in group["params"]),
            }
        )
    return {"class": type(optimizer).__name__, "param_groups": groups}
