"""The `noise_scale` knob's refusals (no torch here: check_config runs before the heavy
imports; the estimator itself is trainlab.callbacks.noise_scale)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from trainlab.checks import ConfigError, check_choice, check_whole_number
from trainlab.optim.combinations import uses_fsdp
from trainlab.plan import largest_divisor_at_most


def check_noise_scale_knob(cfg: DictConfig) -> None:
    """noise_scale is true or false, and not under a strategy that shards the gradients."""
    value = cfg.get("noise_scale", False)
    check_choice(
        "noise_scale", value, (True, False), " (estimate the gradient noise scale as it trains)"
    )
    if value and uses_fsdp(cfg.get("trainer")):
        raise ConfigError(
            "noise_scale=true reads each micro batch's whole gradient, but FSDP and DeepSpeed "
            "give each rank a shard of it, so the norms would be of the shards. Estimate it "
            "with trainer=ddp (or one device), or set noise_scale=false."
        )
    settings = cfg.tune.get("noise_scale") if isinstance(cfg.get("tune"), DictConfig) else None
    if settings is not None:
        check_whole_number("tune.noise_scale.steps", settings.get("steps"), 2, "100")


def check_two_batch_sizes(plan: Any) -> None:
    """The estimator needs an optimizer batch made of several micro batches."""
    if plan.accumulate_grad_batches * plan.world_size >= 2:
        return
    example = quarter_of(plan.batch_size)
    raise ConfigError(
        f"noise_scale=true needs two batch sizes, and this run has one: batch_size="
        f"{plan.batch_size} is one micro batch of {plan.micro_batch_size} on "
        f"{plan.world_size} device(s), so the optimizer's gradient is the micro batch's. "
        f"Give a smaller micro_batch_size (e.g. micro_batch_size={example}: "
        "gradient accumulation, the same optimizer steps) or train on several devices "
        "(trainer=ddp), or set noise_scale=false."
    )


def quarter_of(batch_size: int) -> int:
    """A micro batch of about a quarter of the batch that divides it (1 for a tiny batch)."""
    return largest_divisor_at_most(batch_size, max(1, batch_size // 4))
