"""Optimizers and schedules: how config meets torch and Lightning.

- `schedules`: SchedulerSpec (a scheduler as config describes it) and the warmup schedules
  torch lacks;
- `groups`: the parameter groups (weight-decay split, Muon's split) and the optimizer built
  over them; `roles`: which parameters are input, hidden and output layers;
- `configured`: `configure_optimizers` for a module built from config;
- `registry`: what the template must know about each optimizer class (decoupled decay,
  schedule-free, needs whole tensors); `combinations`: the settings refused with it;
- `muon`: Muon and AdamW as one optimizer; `schedule_free`: schedule-free AdamW sized by the run.

The names below are re-exported because configs name them (`trainlab.optim.SchedulerSpec`,
`trainlab.optim.warmup_schedule`). They load on first use, so that the torch-free parts
(`registry`, `combinations`) can be read by the checks that run before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfiguredOptimizers": "configured",
    "decay_groups_of": "configured",
    "describe_optimizer": "configured",
    "NO_DECAY_MODULES": "groups",
    "build_optimizer": "groups",
    "split_for_weight_decay": "groups",
    "DECAY_SHAPES": "schedules",
    "INTERVALS": "schedules",
    "SCHEDULE_SHAPES": "schedules",
    "SchedulerSpec": "schedules",
    "lr_multiplier": "schedules",
    "warmup_schedule": "schedules",
    "warmup_steps_of": "schedules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainlab.optim' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trainlab.optim.{_EXPORTS[name]}"), name)
