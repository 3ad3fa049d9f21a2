"""Reject values that cannot work before any training starts, with a message a user can act on.

Every message names the knob, the value given and what is allowed, in one paragraph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DIRECTIONS = ("maximize", "minimize")


class ConfigError(ValueError):
    """A value the user gave that cannot work; the message says which and what is allowed."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_number(name: str, value: Any, example: str) -> None:
    if not _is_number(value) or not value > 0 or value == float("inf"):
        raise ConfigError(
            f"{name}={value!r} is not allowed: {name} must be a finite number > 0, "
            f"e.g. {name}={example}."
        )


def check_non_negative_number(name: str, value: Any, example: str) -> None:
    if not _is_number(value) or not value >= 0 or value == float("inf"):
        raise ConfigError(
            f"{name}={value!r} is not allowed: {name} must be a finite number >= 0, "
            f"e.g. {name}={example}."
        )


def check_whole_number(
    name: str, value: Any, minimum: int, example: str, maximum: int | None = None
) -> None:
    if not _is_whole(value) or value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(
            f"{name}={value!r} is not allowed: {name} must be a whole number {allowed}, "
            f"e.g. {name}={example}."
        )


def check_knobs(
    *,
    lr: Any,
    weight_decay: Any,
    batch_size: Any,
    max_epochs: Any,
    seed: Any,
    direction: Any,
    folds: Any,
) -> None:
    """The top-level knobs of `conf/train.yaml`, checked for type and range."""
    check_positive_number("lr", lr, "0.001")
    check_non_negative_number("weight_decay", weight_decay, "0.01")
    check_whole_number("batch_size", batch_size, 1, "64")
    check_whole_number("max_epochs", max_epochs, 1, "20")
    check_whole_number("seed", seed, 0, "42", maximum=2**32 - 1)  # numpy's seed range
    if direction not in DIRECTIONS:
        raise ConfigError(
            f"optimized_direction={direction!r} is not allowed: use maximize (accuracy) or "
            "minimize (a loss)."
        )
    if not _is_whole(folds) or folds == 1 or folds < 0:
        raise ConfigError(
            f"cv.folds={folds!r} is not allowed: use 0 for no cross-validation, or a whole "
            "number >= 2 for K-fold cross-validation, e.g. cv.folds=5."
        )


def check_choice(name: str, value: Any, allowed: Iterable[str], meaning: str = "") -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(
            f"{name}={value!r} is not allowed: use one of {', '.join(map(str, allowed))}{meaning}."
        )


def check_schedule_knobs(*, warmup: Any, min_lr_ratio: Any) -> None:
    """`warmup` is a fraction of the run (< 1) or whole optimizer steps; min_lr_ratio in [0, 1]."""
    check_non_negative_number("warmup", warmup, "0.05")
    if warmup >= 1 and warmup != int(warmup):
        raise ConfigError(
            f"warmup={warmup!r} is not allowed: below 1 it is a fraction of the run (e.g. "
            "warmup=0.05), from 1 on a whole number of optimizer steps (e.g. warmup=100)."
        )
    if not _is_number(min_lr_ratio) or not 0 <= min_lr_ratio <= 1:
        raise ConfigError(
            f"min_lr_ratio={min_lr_ratio!r} is not allowed: it is the final lr as a fraction of "
            "lr, a number from 0 to 1, e.g. min_lr_ratio=0.1."
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
            f"optimized_metric={metric!r} is never logged by this model, so no run could "
            f"report it. The model logs: {', '.join(logged)}."
        )
