"""Settings an optimizer cannot train with, refused before anything is built (no torch here:
train.py runs this before the heavy imports).

- a schedule-free optimizer with a scheduler: its iterate average is the decay, and its lr
  (warmed up by its own `warmup`) weighs that average; a second schedule fights both;
- an optimizer that needs whole tensors (trainlab.optim.registry: Muon, LAMB, LARS, SOAP,
  Adafactor) under FSDP, which gives each rank a flat shard of every parameter;
- EMA under FSDP (Lightning's weight averaging does not support sharded models) and EMA with
  a schedule-free optimizer (which already evaluates an average of its iterates);
- EMA or a schedule-free optimizer with a weights-only ModelCheckpoint: Lightning calls no
  callback when it saves weights only, so the file would hold the trained, not the evaluated,
  weights;
- an optimizer whose step is relative to the weight's norm (LAMB, LARS, Adafactor) under
  parametrization=mup, whose lr rule assumes steps that are not;
- Muon's AdamW part at another lr (`optimizer.adamw_lr_ratio`) with a schedule or test that
  sets every group to one lr: OneCycleLR's `max_lr` and the LR range test.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.checks import ConfigError
from trainlab.optim.registry import traits_of_target

AVERAGING_CALLBACKS = ("EMA", "EMAWeightAveraging", "WeightAveraging", "StochasticWeightAveraging")
MUON_LR_ADJUSTMENTS = ("match_rms_adamw", "original", None)
SHARDING = ("fsdp", "deepspeed")  # strategies that hand each rank a shard of the parameters


def check_optimizer_combinations(cfg: DictConfig, choices: dict[str, Any]) -> None:
    target = cfg.optimizer.get("_target_") if isinstance(cfg.get("optimizer"), DictConfig) else None
    if target is None:
        return
    name = f"optimizer={choices.get('optimizer') or target}"
    traits = traits_of_target(target)
    sharded = uses_fsdp(cfg.get("trainer"))
    averaging = averaging_callback(cfg.get("callbacks"))
    if traits.schedule_free and cfg.get("scheduler") is not None:
        raise ConfigError(
            f"{name} is schedule-free, but scheduler={choices.get('scheduler') or 'set'} would "
            "change its lr as well: schedule-free replaces the decay by averaging its iterates, "
            "weighted by the lr, and warms up by itself (the warmup knob: warmup=0.05 of the "
            "run, or a number of steps). Use scheduler=none, or a scheduled optimizer "
            "(optimizer=adamw) for this scheduler."
        )
    if traits.whole_tensors and sharded:
        raise ConfigError(
            f"{name} needs each parameter whole (a matrix's orthogonalization, a per-tensor "
            "trust ratio or a factored preconditioner), but FSDP gives each rank a flat shard "
            "of every parameter, so it would compute something else without a word. Train it "
            "with trainer=ddp (or one device), or choose an element-wise optimizer under FSDP "
            "(optimizer=adamw, lion, adopt, adamw_schedulefree)."
        )
    if traits.relative_step and cfg.get("parametrization") == "mup":
        raise ConfigError(
            f"{name} sizes each step by the weight's own norm (a trust ratio or RMS(θ) "
            "scaling), which already shrinks with width under μP's init, so μP's lr rule would "
            "count the width twice (measured: activations shrink with width in the coordinate "
            "check). Use parametrization=sp with it, or an optimizer with a μP rule under mup "
            "(optimizer=adam, adamw, sgd, lion, soap, muon)."
        )
    if averaging is not None and sharded:
        raise ConfigError(
            f"callbacks.{averaging} averages the weights, which Lightning does not support for "
            "sharded models (FSDP): the average would be a copy of the whole model on every "
            "rank, built outside the sharding. Use trainer=ddp with EMA, or train without it."
        )
    evaluates_other = averaging is not None or traits.schedule_free
    weights_only = weights_only_checkpoint(cfg.get("callbacks"))
    if evaluates_other and weights_only is not None:
        what = f"callbacks.{averaging}" if averaging is not None else name
        raise ConfigError(
            f"callbacks.{weights_only} saves weights only, and {what} evaluates other weights "
            "than it trains: Lightning calls no callback for a weights-only checkpoint, so the "
            "file would hold the trained weights, not the ones validated. Drop "
            f"callbacks.{weights_only}.save_weights_only=true (the shipped checkpoints save "
            "the full state)."
        )
    adjust = cfg.optimizer.get("adjust_lr_fn", None)
    if traits.family == "muon" and adjust not in MUON_LR_ADJUSTMENTS:
        raise ConfigError(
            f"optimizer.adjust_lr_fn={adjust} is not one of torch Muon's: match_rms_adamw "
            "(each matrix's update at an AdamW update's RMS, so one lr serves both parts: the "
            "default) or original (Keller Jordan's scale, lr ~0.02, with "
            "optimizer.adamw_lr_ratio=0.015 for the AdamW part)."
        )
    ratio = cfg.optimizer.get("adamw_lr_ratio", 1.0)
    if traits.family == "muon" and ratio != 1.0:
        one_lr = None
        if "OneCycleLR" in str(OmegaConf.select(cfg, "scheduler.factory._target_", default="")):
            one_lr = f"scheduler={choices.get('scheduler') or 'onecycle'} (one max_lr)"
        elif cfg.get("tune") and cfg.tune.get("lr"):
            one_lr = "tune=lr (the range test sets one lr)"
        if one_lr:
            raise ConfigError(
                f"{name} with optimizer.adamw_lr_ratio={ratio} trains its AdamW part at another lr "
                f"than Muon's, but {one_lr} would give every group the same lr. Use "
                "optimizer.adjust_lr_fn=match_rms_adamw with adamw_lr_ratio=1.0 (one lr serves "
                "both parts), or another scheduler (warmup_cosine keeps the ratio)."
            )
    if averaging is not None and traits.schedule_free:
        raise ConfigError(
            f"callbacks.{averaging} averages the weights, and {name} already evaluates an "
            "average of its iterates (its eval mode): an average of an average, whose "
            "checkpoints would have to hold both. Use one of them: callbacks=default with "
            f"{name}, or the EMA with optimizer=adamw."
        )


def uses_fsdp(trainer: Any) -> bool:
    """The trainer's strategy shards the parameters: FSDP (by name, Lightning's class, or this
    template's trainlab.scale.fsdp_strategy) or DeepSpeed (ZeRO partitions them too)."""
    strategy = trainer.get("strategy") if isinstance(trainer, DictConfig) else None
    if isinstance(strategy, DictConfig):
        strategy = strategy.get("_target_", "")
    return any(kind in str(strategy or "").lower() for kind in SHARDING)


def weights_only_checkpoint(callbacks: Any) -> str | None:
    """The name of a callbacks entry that saves weights only, if any."""
    if not isinstance(callbacks, DictConfig):
        return None
    for key, node in callbacks.items():
        if isinstance(node, DictConfig) and node.get("save_weights_only", False) is True:
            return str(key)
    return None


def averaging_callback(callbacks: Any) -> str | None:
    """The name of the callbacks entry that averages the weights (EMA), if any."""
    if not isinstance(callbacks, DictConfig):
        return None
    for key, node in callbacks.items():
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if target and str(target).rsplit(".", 1)[-1] in AVERAGING_CALLBACKS:
            return str(key)
    return None
