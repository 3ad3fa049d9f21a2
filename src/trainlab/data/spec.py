"""What a data set tells the model about itself, so that one model config fits any data.

A DataModule says what it holds in a `DataSpec` (its `spec`): the task kind, the shape of one
input, the number of classes or regression targets, the vocabulary. Model configs read it
with the `data_spec` resolver, `in_features: ${data_spec:in_features}`, the way Lightning's
CLI links `data.num_classes` to the model: the numbers are never typed twice, and a model
that needs what the data lacks (a CNN on 30 tabular features) is one message naming both,
before anything is built.

The resolver builds the data config (constructors only store their arguments) and reads
`spec`; a data set whose shape depends on its files reads what it needs to know then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.checks import ConfigError

# the kinds the shipped tasks learn; a fork may declare another (a TaskModule of its own)
KINDS = ("multiclass", "binary", "regression", "language_model")


@dataclass(frozen=True)
class DataSpec:
    """`task`: one of KINDS. `input_shape`: one sample's input, without the batch dimension:
    (features,), (channels, height, width) or (tokens,). `num_classes` for classification,
    `num_targets` for regression, `vocab_size` for token data."""

    task: str
    input_shape: tuple[int, ...]
    num_classes: int | None = None
    num_targets: int | None = None
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"DataSpec task {self.task!r}: a name, e.g. {', '.join(KINDS)}")

    @property
    def in_features(self) -> int:
        """The input flattened: what an MLP's first layer takes."""
        return math.prod(self.input_shape)

    @property
    def num_outputs(self) -> int:
        """What the network's last layer gives: a logit per class (one for binary), a value per
        regression target, a logit per token of the vocabulary."""
        outputs = {
            "multiclass": self.num_classes,
            "binary": 1,
            "regression": self.num_targets,
            "language_model": self.vocab_size,
        }
        if self.task not in outputs:
            raise self._lacks("num_outputs", f"one of the kinds {', '.join(KINDS)}")
        return outputs[self.task]

    @property
    def in_channels(self) -> int:
        return self._image()[0]

    @property
    def image_size(self) -> int:
        return self._image()[1]

    @property
    def block_size(self) -> int:
        if self.task != "language_model":
            raise self._lacks("block_size", "token sequences (a language model's data)")
        return self.input_shape[0]

    def _image(self) -> tuple[int, int]:
        if len(self.input_shape) != 3 or self.input_shape[1] != self.input_shape[2]:
            raise self._lacks("in_channels/image_size", "square images, (channels, size, size)")
        return self.input_shape[0], self.input_shape[1]

    def _lacks(self, key: str, need: str) -> ConfigError:
        return ConfigError(f"the model asks for {key}, which needs {need}; {self.described()}")

    def described(self) -> str:
        held = {"num_classes": self.num_classes, "num_targets": self.num_targets}
        held["vocab_size"] = self.vocab_size
        extra = "".join(f", {k} {v}" for k, v in held.items() if v is not None)
        return f"the data is {self.task} with inputs of shape {self.input_shape}{extra}"


class SpecMissing(ConfigError):
    """The DataModule declares no `spec`: an error only where a config asks for it."""


FIELDS = ("task", "input_shape", "num_classes", "num_targets", "vocab_size")
NEEDS = {
    "num_classes": "classes (classification data)",
    "num_targets": "regression targets",
    "vocab_size": "tokens (a language model's data)",
}
DERIVED = ("in_features", "num_outputs", "in_channels", "image_size", "block_size")


_specs: dict[str, DataSpec] = {}  # by the resolved data config: one build per process


def spec_of_data_config(data: DictConfig) -> DataSpec:
    """The spec of the DataModule that `data` (the `data` config node) builds; built once per
    process for each distinct data config (a run resolves it several times, and a fork's
    spec may read files)."""
    from hydra.utils import instantiate

    key = OmegaConf.to_yaml(data, resolve=True)
    if key in _specs:
        return _specs[key]
    datamodule = instantiate(data)
    spec = getattr(datamodule, "spec", None)
    if not isinstance(spec, DataSpec):
        raise SpecMissing(
            f"{type(datamodule).__name__} declares no `spec` (a trainlab.data.spec.DataSpec), "
            "so the model cannot be sized from it: give the DataModule a `spec` property "
            "(README, Fork it), or write the sizes as numbers in the model's and the task's "
            "configs (model.net.in_features=..., task.num_classes=..., no ${data_spec:...})."
        )
    _specs[key] = spec
    return spec


def data_spec(key: str, *, _root_: DictConfig) -> Any:
    """`${data_spec:<key>}`: one of FIELDS or DERIVED, from the run's own `data` config."""
    if key not in FIELDS + DERIVED:
        raise ConfigError(
            f"${{data_spec:{key}}}: the data spec has no {key!r}; it has "
            f"{', '.join(FIELDS + DERIVED)}"
        )
    spec = spec_of_data_config(_root_.data)
    value = getattr(spec, key)
    if value is None:
        raise spec._lacks(key, NEEDS[key])
    return list(value) if isinstance(value, tuple) else value


def register_resolver() -> None:
    """Once per process, before Hydra composes (importing `trainlab` does it)."""
    if not OmegaConf.has_resolver("data_spec"):
        OmegaConf.register_new_resolver("data_spec", data_spec)
