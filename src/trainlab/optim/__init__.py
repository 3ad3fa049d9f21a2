"""Optimizers and schedules: how config meets torch and Lightning.

- `schedules`: SchedulerSpec (a scheduler as config describes it) and the warmup schedules
  torch lacks;
- `groups`: the parameter groups (weight decay split) and the optimizer built over them;
- `configured`: `configure_optimizers` for a module built from config.

The names below are re-exported because configs name them (`trainlab.optim.SchedulerSpec`,
`trainlab.optim.warmup_schedule`).
"""

from trainlab.optim.configured import ConfiguredOptimizers, decay_groups_of, describe_optimizer
from trainlab.optim.groups import NO_DECAY_MODULES, build_optimizer, split_for_weight_decay
from trainlab.optim.schedules import (
    DECAY_SHAPES,
    INTERVALS,
    SCHEDULE_SHAPES,
    SchedulerSpec,
    lr_multiplier,
    warmup_schedule,
    warmup_steps_of,
)

__all__ = [
    "DECAY_SHAPES",
    "INTERVALS",
    "NO_DECAY_MODULES",
    "SCHEDULE_SHAPES",
    "ConfiguredOptimizers",
    "SchedulerSpec",
    "build_optimizer",
    "decay_groups_of",
    "describe_optimizer",
    "lr_multiplier",
    "split_for_weight_decay",
    "warmup_schedule",
    "warmup_steps_of",
]
