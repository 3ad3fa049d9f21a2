"""Schedule-free AdamW (Defazio et al. 2024, the `schedulefree` package), sized by the run.

Schedule-free replaces the decaying schedule by averaging its iterates: the weights it trains
(`y`, in train mode) are not the weights to evaluate (`x`, in eval mode), so the optimizer is
switched with `optimizer.train()`/`.eval()` (trainlab.callbacks.schedule_free does it around
validation, test and every checkpoint). Its own warmup is the only schedule it takes; here it
is the run's `warmup` knob (a fraction of the run or a number of steps), which needs the run's
length in optimizer steps: `ConfiguredOptimizers` passes `total_steps` to any optimizer
builder that asks for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from schedulefree import AdamWScheduleFree

from trainlab.checks import ConfigError
from trainlab.optim.schedules import warmup_steps_of


def adamw_schedulefree(
    params: Iterable[Any],
    *,
    lr: float,
    weight_decay: float = 0.0,
    warmup: float | int = 0.05,
    total_steps: int = 1000,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
) -> AdamWScheduleFree:
    """AdamWScheduleFree with `warmup_steps` from `warmup` over `total_steps`."""
    if isinstance(warmup, float) and warmup < 1 and not math.isfinite(total_steps):
        raise ConfigError(
            f"warmup={warmup} is a fraction of the run, but this run has no set length "
            "(max_epochs=-1 and no max_steps): give schedule-free's warmup as a number of "
            "optimizer steps (warmup=100)."
        )
    return AdamWScheduleFree(
        params,
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps_of(warmup, total_steps),
        r=r,
        weight_lr_power=weight_lr_power,
    )


adamw_schedulefree.builds = AdamWScheduleFree  # what trainlab.optim.registry looks up


def is_schedule_free(optimizer) -> bool:
    """An optimizer with train and eval modes (schedulefree's, or any that marks its groups
    `train_mode` and has .train()/.eval())."""
    return (
        callable(getattr(optimizer, "train", None))
        and callable(getattr(optimizer, "eval", None))
        and any("train_mode" in group for group in optimizer.param_groups)
    )
