"""Reject values that cannot work before any training starts, with a message a user can act on.

Every message names the knob, the value given and what is allowed, in one paragraph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# a number the model trains with must fit a float32; a count must fit an int32
FLOAT32_MAX = 3.4028234663852886e38
WHOLE_MAX = 2**31 - 1


class ConfigError(ValueError):
    """A value the user gave that cannot work; the message says which and what is allowed."""


def shown(value: Any) -> str:
    """A value as the user would type it: null, true, 'text', [1, 2], 1e+300."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return repr(OmegaConf.to_container(value, resolve=False))
    return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_number(name: str, value: Any, example: str) -> None:
    if not _is_number(value) or not 0 < value <= FLOAT32_MAX:
        raise ConfigError(
            f"{name}={shown(value)} is not allowed: {name} must be a finite number > 0 and at "
            f"most 3.4e38 (the largest float32), e.g. {name}={example}."
        )


def check_non_negative_number(name: str, value: Any, example: str) -> None:
    if not _is_number(value) or not 0 <= value <= FLOAT32_MAX:
        raise ConfigError(
            f"{name}={shown(value)} is not allowed: {name} must be a finite number >= 0 and at "
            f"most 3.4e38 (the largest float32), e.g. {name}={example}."
        )


def check_whole_number(
    name: str, value: Any, minimum: int, example: str, maximum: int | None = None
) -> None:
    maximum = WHOLE_MAX if maximum is None else maximum
    if not _is_whole(value) or value < minimum or value > maximum:
        raise ConfigError(
            f"{name}={shown(value)} is not allowed: {name} must be a whole number from "
            f"{minimum} to {maximum}, e.g. {name}={example}."
        )


def check_optional(check, name: str, value: Any, *args: Any) -> None:
    """`check(name, value, *args)` unless the value is null (the knob's 'off')."""
    if value is not None:
        check(name, value, *args)


def check_text(name: str, value: Any, example: str, *, nullable: bool = False) -> None:
    """A path, a metric name, a precision: text (a number is accepted where Lightning takes
    one, e.g. precision=32); never a list or a mapping."""
    if value is None and nullable:
        return
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        allowed = "text or null" if nullable else "text"
        raise ConfigError(
            f"{name}={shown(value)} is not allowed: {name} must be {allowed}, e.g. "
            f"{name}={example}."
        )


def check_knobs(
    *,
    lr: Any,
    weight_decay: Any,
    batch_size: Any,
    max_epochs: Any,
    seed: Any,
    folds: Any,
) -> None:
    """The top-level numeric knobs of `conf/train.yaml`, checked for type and range."""
    check_positive_number("lr", lr, "0.001")
    check_non_negative_number("weight_decay", weight_decay, "0.01")
    check_whole_number("batch_size", batch_size, 1, "64")
    check_whole_number("max_epochs", max_epochs, 1, "20")
    check_whole_number("seed", seed, 0, "42", maximum=2**32 - 1)  # numpy's seed range
    if not _is_whole(folds) or folds == 1 or not 0 <= folds <= WHOLE_MAX:
        raise ConfigError(
            f"cv.folds={shown(folds)} is not allowed: use 0 for no cross-validation, or a whole "
            "number >= 2 for K-fold cross-validation, e.g. cv.folds=5."
        )


def check_choice(name: str, value: Any, allowed: Iterable[Any], meaning: str = "") -> None:
    """`value` is one of `allowed`, of the same type too: 1 is not true, [true] is not true."""
    allowed = tuple(allowed)
    if not any(type(value) is type(a) and value == a for a in allowed):
        raise ConfigError(
            f"{name}={shown(value)} is not allowed: use one of "
            f"{', '.join(shown(a).strip(chr(39)) for a in allowed)}{meaning}."
        )


def check_schedule_knobs(*, warmup: Any, min_lr_ratio: Any) -> None:
    """`warmup` is a fraction of the run (< 1) or whole optimizer steps; min_lr_ratio in [0, 1]."""
    check_non_negative_number("warmup", warmup, "0.05")
    if warmup >= 1 and warmup != int(warmup):
        raise ConfigError(
            f"warmup={shown(warmup)} is not allowed: below 1 it is a fraction of the run (e.g. "
            "warmup=0.05), from 1 on a whole number of optimizer steps (e.g. warmup=100)."
        )
    if not _is_number(min_lr_ratio) or not 0 <= min_lr_ratio <= 1:
        raise ConfigError(
            f"min_lr_ratio={shown(min_lr_ratio)} is not allowed: it is the final lr as a "
            "fraction of lr, a number from 0 to 1, e.g. min_lr_ratio=0.1."
        )


def check_batch_fits(batch_size: int, train_size: int) -> None:
    if batch_size > train_size:
        raise ConfigError(
            f"batch_size={batch_size} is larger than the training split ({train_size} samples): "
            f"choose batch_size between 1 and {train_size}."
        )


def check_optimized_metric(metric: Any, logged: Iterable[str]) -> None:
    logged = tuple(logged)
    if metric not in logged:
        raise ConfigError(
            f"optimized_metric={shown(metric)} is never logged by this model, so no run could "
            f"report it. The model logs: {', '.join(logged)}; and val/<name>_best, the best so "
            "far, of any val/<name> there (give e.g. optimized_metric=val/<name>_best, or add "
            "the metric to task.metrics)."
        )


def check_split_fractions(**fractions: Any) -> None:
    """Each held-out share is a number in (0, 1), and together they leave samples to train on."""
    for name, value in fractions.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ConfigError(
                f"data.{name}={shown(value)} is not allowed: it is the share of the samples held "
                f"out, a number between 0 and 1 (both excluded), e.g. data.{name}=0.15."
            )
    if sum(fractions.values()) >= 1:
        given = " + ".join(f"data.{k}={v}" for k, v in fractions.items())
        raise ConfigError(
            f"{given} holds out {sum(fractions.values()):g} of the samples, nothing is left to "
            "train on: keep their sum below 1, e.g. data.val_fraction=0.15 data.test_fraction=0.2."
        )


WEIGHT_DECAY_GROUPS = ("auto", "split", "all")


def check_weight_decay_groups(value: Any) -> None:
    check_choice(
        "weight_decay_groups",
        value,
        WEIGHT_DECAY_GROUPS,
        " (split: no decay on biases, norm weights and embeddings; auto: split for adamw)",
    )
