"""Reject values that cannot work before any training starts, with a message a user can act on.

Every message names the knob, the value given and what is allowed, in one paragraph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# what Lightning's Trainer accepts for `precision` (fabric's _PRECISION_INPUT, spelled out)
PRECISIONS = (
    "32-true",
    "32",
    "64-true",
    "64",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "16",
    "bf16",
    "transformer-engine",
    "transformer-engine-float16",
)


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


def check_whole_number(name: str, value: Any, minimum: int, example: str) -> None:
    if not _is_whole(value) or value < minimum:
        raise ConfigError(
            f"{name}={value!r} is not allowed: {name} must be a whole number >= {minimum}, "
            f"e.g. {name}={example}."
        )


def check_precision(value: Any) -> None:
    if str(value) not in PRECISIONS:
        raise ConfigError(
            f"precision={value!r} is not a precision Lightning knows. Allowed: "
            f"{', '.join(PRECISIONS)}. On a CPU use 32-true or bf16-mixed; on a GPU "
            "bf16-mixed or 16-mixed."
        )


def check_knobs(
    *,
    lr: Any,
    weight_decay: Any,
    batch_size: Any,
    max_epochs: Any,
    seed: Any,
    precision: Any,
) -> None:
    """The top-level knobs of `conf/train.yaml`, checked for type and range."""
    check_positive_number("lr", lr, "0.001")
    check_non_negative_number("weight_decay", weight_decay, "0.01")
    check_whole_number("batch_size", batch_size, 1, "64")
    check_whole_number("max_epochs", max_epochs, 1, "20")
    check_whole_number("seed", seed, 0, "42")
    check_precision(precision)


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
