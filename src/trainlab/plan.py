"""The batch plan: from the knobs a user sets to what each device does.

`batch_size` is the number of samples per optimizer step, whatever the hardware. Each device
runs `micro_batch_size` samples per forward (default: batch_size / world_size), and gradients
are accumulated over enough micro batches to make up the global batch:

    accumulate_grad_batches = batch_size / (micro_batch_size x world_size)

The lr can follow the batch size by a scaling rule, applied here and nowhere else:

    linear: lr_effective = lr x batch_size / base_batch_size     (Goyal et al., 2017)
    sqrt:   lr_effective = lr x sqrt(batch_size / base_batch_size) (for Adam-like optimizers)
    power:  lr_effective = lr x (batch_size / base_batch_size) ** lr_scaling_exponent
            (an exponent measured on your own sweep: trainlab.report.lr_batch_rule fits it)

linear and sqrt fix their own exponent (1 and 0.5), so lr_scaling_exponent is given with
power and only with power.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from trainlab.checks import ConfigError, check_choice, check_whole_number, shown

LR_SCALINGS = ("none", "linear", "sqrt", "power")
EXPONENT_RANGE = (-2.0, 2.0)  # beyond it the lr moves 16x per doubling of the batch


@dataclass
class Plan:
    batch_size: int
    world_size: int
    micro_batch_size: int
    accumulate_grad_batches: int
    lr: float
    lr_scaling: str
    base_batch_size: int
    lr_effective: float
    lr_scaling_exponent: float | None = None  # with lr_scaling=power; a record before it: None
    parametrization: str = "sp"  # sp | mup (trainlab.models.width)
    base_width: int | None = None  # under mup: the width at which lr and init are right
    width_multiplier: float = 1.0  # width / base_width under mup: μP's m
    critical_batch_size: int | None = None  # tune=noise_scale: B_simple at the start
    batch_size_warmup: dict[str, Any] | None = None  # its phases (trainlab.batch_warmup)
    tuned: dict[str, Any] = field(default_factory=dict)  # what tune= measured and chose

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_lr_scaling(rule: Any, exponent: Any = None) -> None:
    """The rule is one of LR_SCALINGS; lr_scaling_exponent is a number in EXPONENT_RANGE given
    with power, and null with the rules that fix their own exponent."""
    check_choice(
        "lr_scaling",
        rule,
        LR_SCALINGS,
        ": lr x (batch_size / base_batch_size), its square root, or its power lr_scaling_exponent",
    )
    low, high = EXPONENT_RANGE
    if exponent is not None:
        number = isinstance(exponent, int | float) and not isinstance(exponent, bool)
        if not number or not low <= exponent <= high:  # nan fails both comparisons
            raise ConfigError(
                f"lr_scaling_exponent={shown(exponent)} is not allowed: it is the power of "
                f"batch_size / base_batch_size that multiplies lr with lr_scaling=power, a finite "
                f"number from {low:g} to {high:g} (or null), e.g. lr_scaling_exponent=0.5."
            )
        if rule != "power":
            fixed = {"linear": " (linear is exponent 1)", "sqrt": " (sqrt is exponent 0.5)"}
            raise ConfigError(
                f"lr_scaling_exponent={shown(exponent)} is not allowed with lr_scaling={rule}"
                f"{fixed.get(rule, ' (no scaling)')}: the exponent is read only by "
                f"lr_scaling=power. Use lr_scaling=power lr_scaling_exponent={exponent:g}, or "
                f"leave lr_scaling_exponent=null."
            )
    elif rule == "power":
        raise ConfigError(
            "lr_scaling=power needs lr_scaling_exponent, the power of batch_size / "
            "base_batch_size that multiplies lr; it is null. Give a number from "
            f"{low:g} to {high:g}, e.g. lr_scaling=power lr_scaling_exponent=0.5 (or use "
            "lr_scaling=linear or sqrt, which fix exponents 1 and 0.5)."
        )


def scaled_lr(
    lr: float, batch_size: int, base_batch_size: int, rule: str, exponent: float | None = None
) -> float:
    """The lr trained with: the one place a scaling rule is applied."""
    check_lr_scaling(rule, exponent)
    ratio = batch_size / base_batch_size
    power = {"none": 0.0, "linear": 1.0, "sqrt": 0.5, "power": exponent}[rule]
    return lr if power == 0 else lr * ratio**power


def accumulation_for(batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro batches per optimizer step on each device; refuses what does not divide exactly.

    `batch_size` must already be a multiple of `world_size` (make_plan checks it first).
    """
    per_step = micro_batch_size * world_size
    if batch_size % per_step:
        raise ConfigError(
            f"batch_size={batch_size} cannot be split into micro batches of {micro_batch_size} "
            f"on {world_size} device(s): {micro_batch_size} x {world_size} = {per_step} does not "
            f"divide {batch_size}. Choose a micro_batch_size that divides "
            f"{batch_size // world_size} (batch_size per device), e.g. micro_batch_size="
            f"{largest_divisor_at_most(batch_size // world_size, micro_batch_size)}."
        )
    return batch_size // per_step


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of n that is <= limit (at least 1)."""
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def make_plan(
    *,
    batch_size: int,
    micro_batch_size: int | None,
    world_size: int,
    lr: float,
    lr_scaling: str,
    base_batch_size: Any,
    lr_scaling_exponent: Any = None,
) -> Plan:
    check_whole_number("base_batch_size", base_batch_size, 1, "256")
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size={batch_size} cannot be shared by {world_size} devices: it must be a "
            f"multiple of the world size ({world_size}), e.g. batch_size="
            f"{world_size * max(1, batch_size // world_size)}."
        )
    if micro_batch_size is None:
        micro_batch_size = batch_size // world_size
    check_whole_number("micro_batch_size", micro_batch_size, 1, str(batch_size // world_size))
    accumulate = accumulation_for(batch_size, micro_batch_size, world_size)
    return Plan(
        batch_size=batch_size,
        world_size=world_size,
        micro_batch_size=micro_batch_size,
        accumulate_grad_batches=accumulate,
        lr=lr,
        lr_scaling=lr_scaling,
        base_batch_size=base_batch_size,
        lr_effective=scaled_lr(lr, batch_size, base_batch_size, lr_scaling, lr_scaling_exponent),
        lr_scaling_exponent=lr_scaling_exponent,
    )


def with_micro_batch(plan: Plan, micro_batch_size: int) -> Plan:
    """The same global batch with another micro batch: accumulation re-derived."""
    accumulate = accumulation_for(plan.batch_size, micro_batch_size, plan.world_size)
    return Plan(
        **{
            **plan.as_dict(),
            "micro_batch_size": micro_batch_size,
            "accumulate_grad_batches": accumulate,
        }
    )


def micro_batches_per_epoch(train_size: int, plan: Plan) -> int:
    """What Lightning will count: each device sees its share of the data in micro batches."""
    return math.ceil(math.ceil(train_size / plan.world_size) / plan.micro_batch_size)


def optimizer_steps_per_epoch(train_size: int, plan: Plan) -> int:
    """The last incomplete accumulation of an epoch still steps the optimizer."""
    return math.ceil(micro_batches_per_epoch(train_size, plan) / plan.accumulate_grad_batches)
