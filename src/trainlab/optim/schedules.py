"""Learning-rate schedules: how a scheduler is described in config and handed to Lightning.

A scheduler option in `conf/scheduler/` is a `SchedulerSpec`: the torch scheduler as a
partial (everything but the optimizer), plus what Lightning needs to step it
(`interval`, `frequency`, `monitor`). Schedules whose length must be known up front name
the argument to fill with `length_arg`; it receives the run's length in the scheduler's
own unit (optimizer steps or epochs), so no config has to guess it.

Also here: the warmup schedules torch lacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from trainlab.checks import ConfigError

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
        kwargs: dict[str, Any] = {}
        if self.length_arg is not None:
            kwargs[self.length_arg] = max(1, total_intervals // self.frequency)
        peak = getattr(self.factory, "keywords", {}).get("max_lr")
        multipliers = [g.get("lr_multiplier", 1.0) for g in optimizer.param_groups]
        if isinstance(peak, int | float) and any(x != 1.0 for x in multipliers):
            # one max_lr would set every group to it: each group peaks at its μP share
            kwargs["max_lr"] = [peak * x for x in multipliers]
        config = {
            "scheduler": self.factory(optimizer, **kwargs),
            "interval": self.interval,
            "frequency": self.frequency,
        }
        if self.monitor is not None:
            config["monitor"] = self.monitor
        return config


# --- schedules torch lacks: warmup, then a decay, sized in optimizer steps -------------------

SCHEDULE_SHAPES = ("warmup_cosine", "warmup_linear", "wsd", "inverse_sqrt", "constant_warmup")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def warmup_steps_of(warmup: float | int, total_steps: int) -> int:
    """`warmup` as optimizer steps (a whole number >= 1) or as a fraction of the run (< 1)."""
    if isinstance(warmup, float) and warmup < 1:
        return round(warmup * total_steps)
    return int(warmup)


def lr_multiplier(
    step: int,
    *,
    shape: str,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float,
    decay_fraction: float = 0.2,
    decay_shape: str = "linear",
) -> float:
    """The factor on `lr` after `step` optimizer steps, for one of SCHEDULE_SHAPES.

    Linear warmup from ~0 to 1 over `warmup_steps`, then:
      warmup_cosine   cosine from 1 down to min_lr_ratio at step total_steps (after the last)
      warmup_linear   straight line from 1 down to min_lr_ratio at step total_steps
      wsd             flat at 1, then the last `decay_fraction` of the run decays to
                      min_lr_ratio (linear, cosine or 1-sqrt)
      inverse_sqrt    1 / sqrt(step / warmup_steps), never below min_lr_ratio
      constant_warmup flat at 1
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if shape == "constant_warmup":
        return 1.0
    if shape == "inverse_sqrt":
        return max(min_lr_ratio, math.sqrt(max(warmup_steps, 1) / max(step, 1)))
    if shape == "wsd":
        decay_start = total_steps - round(decay_fraction * total_steps)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, total_steps - decay_start)
    else:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress)
    if shape == "warmup_cosine" or (shape == "wsd" and decay_shape == "cosine"):
        remaining = 0.5 * (1 + math.cos(math.pi * progress))
    elif shape == "wsd" and decay_shape == "1-sqrt":
        remaining = 1 - math.sqrt(progress)
    else:
        remaining = 1 - progress
    return min_lr_ratio + (1 - min_lr_ratio) * remaining


def warmup_schedule(
    optimizer: Optimizer,
    total_steps: int,
    *,
    shape: str,
    warmup: float | int = 0.05,
    min_lr_ratio: float = 0.0,
    decay_fraction: float = 0.2,
    decay_shape: str = "linear",
) -> LambdaLR:
    """A LambdaLR over `lr_multiplier`, stepped once per optimizer step."""
    if shape not in SCHEDULE_SHAPES:
        raise ValueError(f"schedule shape={shape!r} is not one of {SCHEDULE_SHAPES}")
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"decay_shape={decay_shape!r} is not one of {DECAY_SHAPES}")
    warmup_steps = warmup_steps_of(warmup, total_steps)
    if warmup_steps >= total_steps:
        raise ConfigError(
            f"warmup={warmup} is {warmup_steps} optimizer steps, but the whole run is "
            f"{total_steps}: the lr would never leave warmup. Use a fraction (warmup=0.05) "
            f"or fewer steps than {total_steps}."
        )

    def multiplier(step: int) -> float:
        return lr_multiplier(
            step,
            shape=shape,
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            min_lr_ratio=min_lr_ratio,
            decay_fraction=decay_fraction,
            decay_shape=decay_shape,
        )

    return LambdaLR(optimizer, multiplier)
