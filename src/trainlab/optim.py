"""Optimizers and schedules: how config meets torch and Lightning.

SchedulerSpec: how a learning-rate scheduler is described in config and handed to Lightning.

A scheduler option in `conf/scheduler/` is a `SchedulerSpec`: the torch scheduler as a
partial (everything but the optimizer), plus what Lightning needs to step it
(`interval`, `frequency`, `monitor`). Schedules whose length must be known up front name
the argument to fill with `length_arg`; it receives the run's length in the scheduler's
own unit (optimizer steps or epochs), so no config has to guess it.

Also here: the warmup schedules torch lacks, and the weight-decay parameter groups.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from trainlab.checks import ConfigError, check_weight_decay_groups

log = logging.getLogger(__name__)

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


class ConfiguredOptimizers:
    """`configure_optimizers` for a LightningModule built from config.

    The module holds `optimizer_factory` (a partial), `scheduler_spec` (a SchedulerSpec or
    None) and `weight_decay_groups` (or `hparams.weight_decay_groups`); this builds the
    optimizer over the module's parameter groups, records what was built (before a scheduler
    rewrites the lr: OneCycleLR does at once) in `optimizer_built`, and sizes the schedule
    from Lightning's own count of optimizer steps (or epochs).
    """

    def configure_optimizers(self):
        optimizer = build_optimizer(self, self.optimizer_factory, decay_groups_of(self))
        built = describe_optimizer(optimizer)
        if built != getattr(self, "optimizer_built", None):  # once, not per LR-test trial
            log.info("optimizer: %s", built)
        self.optimizer_built = built
        spec = self.scheduler_spec
        if spec is None:
            return optimizer
        if spec.interval == "step":
            length = self.trainer.estimated_stepping_batches
        else:
            length = self.trainer.max_epochs
        return {"optimizer": optimizer, "lr_scheduler": spec.lightning_config(optimizer, length)}


def decay_groups_of(module) -> str:
    """How the module's weight decay is split: its own attribute (TaskModule keeps it), else
    the saved hyperparameter of a module of its own, else auto."""
    groups = getattr(module, "weight_decay_groups", None)
    return groups if groups is not None else module.hparams.get("weight_decay_groups", "auto")


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
      warmup_cosine   cosine from 1 down to min_lr_ratio at the last step
      warmup_linear   straight line from 1 down to min_lr_ratio at the last step
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


# --- parameter groups: which tensors get weight decay ----------------------------------------

NO_DECAY_MODULES = (nn.Embedding, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def split_for_weight_decay(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) parameters.

    Weight decay pulls weights towards 0. That regularizes matrices and convolution kernels,
    but on biases and normalization gains/shifts it only fights the scale they exist to learn,
    and on embeddings it shrinks rare tokens' rows hardest (nanoGPT and timm exclude all of
    them). So: every 1-D tensor, and every weight of an embedding or norm layer, is not decayed.
    """
    excluded = {
        id(p)
        for m in module.modules()
        if isinstance(m, NO_DECAY_MODULES)
        for p in m.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in excluded else decay).append(p)
    return decay, no_decay


def build_optimizer(
    module: nn.Module, factory: Callable[..., Optimizer], weight_decay_groups: str = "auto"
) -> Optimizer:
    """Call the optimizer partial on the module's parameters, split into decay groups.

    `weight_decay_groups`: `split` always excludes biases, norm weights and embeddings from
    weight decay; `all` decays every parameter (torch's default); `auto` splits for AdamW,
    whose decoupled decay is the one meant to be used with a real weight_decay.
    """
    check_weight_decay_groups(weight_decay_groups)
    optimizer_class = getattr(factory, "func", factory)
    split = weight_decay_groups == "split" or (
        weight_decay_groups == "auto" and issubclass(optimizer_class, torch.optim.AdamW)
    )
    if not split:
        return factory([p for p in module.parameters() if p.requires_grad])
    decay, no_decay = split_for_weight_decay(module)
    # the split shows once in the log, as the two param groups of the "optimizer:" line
    return factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
