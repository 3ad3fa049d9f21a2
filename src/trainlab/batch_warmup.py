"""Batch-size warmup: the optimizer batch grows from one micro batch per device to batch_size.

Early in training the gradient noise scale (the critical batch size) is small, so a large
batch spends samples for steps it does not need; it grows as the loss falls (McCandlish et
al. 2018, Merrill et al. 2025). `batch_size_warmup` starts at `micro_batch_size x world_size`
and raises gradient accumulation until the batch is `batch_size`:

- its length is a fraction of the run's samples (< 1: e.g. 0.1, the first 10 % of the data
  the run trains on) or a number of optimizer steps (a whole number >= 1);
- over it the batch follows a straight line from the first batch to batch_size, rounded down
  to an accumulation of 1, 2, 4, 8, ... micro batches (then batch_size's own);
- Lightning decides a step's end by its micro batch's index in the epoch modulo the
  accumulation, so the accumulation only grows where that index is a multiple of the new
  value: one step late at most between doublings; the last growth, to an accumulation that is
  not a power of two (15, say), waits up to lcm(8, 15) / 8 - 1 = 14 steps (or the next
  epoch). An epoch's short last step stays as it is.

The whole schedule is a function of the micro batches per epoch, max_epochs and max_steps, so
it is worked out once: the plan records it, the schedulers are sized with its optimizer steps,
and the callback (trainlab.callbacks.batch_size_warmup) replays it by optimizer step, which a
resumed run restores. No torch here: check_config refuses a bad value before the heavy imports.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from trainlab.checks import ConfigError, shown
from trainlab.plan import largest_divisor_at_most, scaled_lr

OFF = (None, 0)


def check_batch_size_warmup_knob(value: Any) -> None:
    """null or 0 (off), a fraction in (0, 1), or a whole number of optimizer steps."""
    if value in OFF and not isinstance(value, bool):
        return
    fraction = isinstance(value, float) and 0 < value < 1
    steps = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not (fraction or steps):
        raise ConfigError(
            f"batch_size_warmup={shown(value)} is not allowed: below 1 it is the fraction of "
            "the run's samples over which the batch grows to batch_size (e.g. "
            "batch_size_warmup=0.1), from 1 on a whole number of optimizer steps (e.g. "
            "batch_size_warmup=200); null or 0 turns it off."
        )


def check_warmup_without_batch_tuning(cfg: Any) -> None:
    """tune=batch_size picks the micro batch, which is where a warmup starts: one or the other."""
    tune = cfg.get("tune")
    if warming_up(cfg.get("batch_size_warmup")) and tune is not None and tune.get("batch_size"):
        raise ConfigError(
            f"batch_size_warmup={shown(cfg.batch_size_warmup)} starts from the micro batch, and "
            "tune=batch_size would choose that micro batch by memory or throughput (a large "
            "one), not as the warmup's first batch. Tune first (python train.py "
            "tune=batch_size), then warm up with micro_batch_size=<a smaller one>, or leave "
            "out one of the two."
        )


def warming_up(value: Any) -> bool:
    return value not in OFF or isinstance(value, bool)


def default_micro_batch(cfg: Any, world_size: int) -> int | None:
    """The micro batch a warmup starts from when micro_batch_size is null: base_batch_size
    shared by the devices (the batch at which `lr` is right), or the largest divisor of the
    per-device batch below it; without a warmup, null (the plan's default)."""
    if cfg.micro_batch_size is not None or not warming_up(cfg.get("batch_size_warmup")):
        return cfg.micro_batch_size
    per_device = cfg.batch_size // max(1, world_size)
    return largest_divisor_at_most(per_device, max(1, cfg.base_batch_size // world_size))


def accumulation_levels(final: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `final`, then `final`: the accumulations a warmup passes through."""
    levels = [1]
    while levels[-1] * 2 < final:
        levels.append(levels[-1] * 2)
    return (*levels, final) if final > 1 else (1,)


@dataclass(frozen=True)
class Schedule:
    """Where the accumulation changes (`changes`: (optimizer step, accumulation), from step 0)
    and the optimizer steps the whole run takes (inf for an endless one)."""

    changes: tuple[tuple[int, int], ...]
    optimizer_steps: float
    warmup_steps: int  # the step from which the batch is batch_size

    def accumulation_at(self, step: int) -> int:
        """The accumulation of the optimizer step that `step` steps have led to."""
        index = bisect_right([s for s, _ in self.changes], step) - 1
        return self.changes[max(index, 0)][1]


def warmup_schedule(
    warmup: float | int,
    final: int,
    batches_per_epoch: int,
    max_epochs: int,
    max_steps: int | None,
) -> Schedule:
    """The schedule Lightning's loop will follow, worked out by walking it step by step to the
    end of the warmup (then the rest is arithmetic). `final` is the full accumulation;
    progress is counted in micro batches, which are samples / (micro batch x world size)."""
    endless = max_epochs is None or max_epochs < 0
    max_steps = max_steps if max_steps is not None and max_steps > 0 else None
    if isinstance(warmup, float):  # a fraction of the run's micro batches at the full batch
        run = math.inf if endless else batches_per_epoch * max_epochs
        if max_steps is not None:
            run = min(run, max_steps * final)
        if not math.isfinite(run):
            raise ConfigError(
                f"batch_size_warmup={warmup:g} is a fraction of the run, and this run has no "
                "end (max_epochs=-1 and no trainer.max_steps): give the warmup as a number of "
                "optimizer steps (e.g. batch_size_warmup=200), or an end to the run."
            )
        length, by_steps = max(warmup * run, 1e-9), False
    else:
        length, by_steps = float(warmup), True
    levels = accumulation_levels(final)
    accumulation, steps, seen, epoch = levels[0], 0, 0, 0
    changes = [(0, accumulation)]

    def wanted() -> int:
        progress = min(1.0, (steps if by_steps else seen) / length)
        target = 1 + progress * (final - 1)  # the batch, in micro batches per device
        return max(level for level in levels if level <= target + 1e-9)

    while accumulation < final:
        if (not endless and epoch >= max_epochs) or (max_steps is not None and steps >= max_steps):
            return Schedule(tuple(changes), steps, steps)  # the run ends inside the warmup
        in_epoch = 0
        while in_epoch < batches_per_epoch and (max_steps is None or steps < max_steps):
            if accumulation < final:
                grown = max(
                    level
                    for level in levels
                    if accumulation <= level <= wanted() and in_epoch % level == 0
                )
                if grown != accumulation:
                    accumulation = grown
                    changes.append((steps, accumulation))
            if accumulation == final:
                break
            taken = min(accumulation, batches_per_epoch - in_epoch)
            in_epoch, seen, steps = in_epoch + taken, seen + taken, steps + 1
        epoch += in_epoch >= batches_per_epoch
        if accumulation == final and in_epoch < batches_per_epoch:  # the rest of this epoch
            steps += math.ceil((batches_per_epoch - in_epoch) / final)
            epoch += 1
    warmup_steps = changes[-1][0]
    total = (
        math.inf if endless else steps + (max_epochs - epoch) * math.ceil(batches_per_epoch / final)
    )
    if max_steps is not None:
        total = min(total, max_steps)
    return Schedule(tuple(changes), total, warmup_steps)


def planned_warmup(
    value: float | int, plan: Any, batches_per_epoch: int, max_epochs: int, max_steps: int | None
) -> Schedule:
    """The warmup's schedule for `plan`, refused where it cannot grow or would not end before
    the run does (check_warmup_fits)."""
    schedule = warmup_schedule(
        value, plan.accumulate_grad_batches, batches_per_epoch, max_epochs, max_steps
    )
    check_warmup_fits(value, plan, schedule)
    return schedule


def check_warmup_fits(value: Any, plan: Any, schedule: Schedule) -> None:
    """There is a batch to grow from, and the run reaches batch_size before it ends."""
    if plan.accumulate_grad_batches == 1:
        per_device = plan.batch_size // plan.world_size
        smaller = largest_divisor_at_most(per_device, max(1, per_device // 8))
        raise ConfigError(
            f"batch_size_warmup={shown(value)} grows the batch from micro_batch_size x world "
            f"size to batch_size, and here both are {plan.batch_size} (micro batch "
            f"{plan.micro_batch_size} on {plan.world_size} device(s)): there is nothing to grow. "
            f"Give a smaller micro_batch_size (e.g. micro_batch_size={smaller}), or set "
            "batch_size_warmup=null."
        )
    if schedule.warmup_steps >= schedule.optimizer_steps or schedule.changes[-1][1] < (
        plan.accumulate_grad_batches
    ):
        raise ConfigError(
            f"batch_size_warmup={shown(value)} would not reach batch_size={plan.batch_size} "
            f"before the run ends ({schedule.optimizer_steps:g} optimizer steps): give a "
            "shorter warmup (a fraction such as batch_size_warmup=0.1, or fewer steps than "
            "the run's), or a longer run (max_epochs)."
        )


def warmup_record(value: Any, plan: Any, schedule: Schedule) -> dict[str, Any]:
    """What the plan says about the warmup: each phase's first step, batch and lr."""
    per_micro = plan.micro_batch_size * plan.world_size
    phases = []
    for step, accumulation in schedule.changes:
        batch = accumulation * per_micro
        factor = lr_factor(plan, batch)
        phases.append(
            {
                "from_step": step,
                "batch_size": batch,
                "accumulate_grad_batches": accumulation,
                "lr": plan.lr_effective * factor,
            }
        )
    steps = schedule.optimizer_steps
    return {
        "warmup": value,
        "unit": "steps" if isinstance(value, int) else "fraction of the run's samples",
        "warmup_steps": schedule.warmup_steps,
        "optimizer_steps": steps if math.isfinite(steps) else None,
        "phases": phases,
    }


def lr_factor(plan: Any, batch: int) -> float:
    """The lr rule at `batch` relative to the plan's batch_size: 1 without lr_scaling."""
    at = scaled_lr(1.0, batch, plan.base_batch_size, plan.lr_scaling, plan.lr_scaling_exponent)
    full = scaled_lr(
        1.0, plan.batch_size, plan.base_batch_size, plan.lr_scaling, plan.lr_scaling_exponent
    )
    return at / full
