"""The search space of an Optuna sweep, in Hydra's override syntax (as hydra-optuna-sweeper
read it), and the overrides of one trial.

Each entry of `hydra.sweeper.params`, and each sweep on the command line, is one dimension:

    lr: tag(log, interval(1e-4, 1e-1))     float, log-uniform (`tag(int, ...)`: whole numbers)
    dropout: interval(0.0, 0.5)            float, uniform
    optimizer: choice(sgd_momentum, adam)  categorical (so is a plain list: adam,sgd)
    batch_size: range(32, 257, 32)         int with a step; the stop is exclusive, as in
                                           Python and Hydra's own sweeper (32 ... 256)

A command-line value that is no sweep (`max_epochs=5`) is passed to every trial unchanged;
a command-line sweep of a key in `params` replaces that entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainlab.checks import ConfigError


@dataclass
class SearchSpace:
    """Optuna distributions by override key, and the overrides every trial gets."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """One trial's overrides: its sampled values, then the fixed ones."""
        return [f"{key}={as_override(params[key])}" for key in self.distributions] + self.fixed

    def grid(self) -> dict[str, list[Any]]:
        """The values of every dimension, for GridSampler; ConfigError for a continuous one."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        choices: dict[str, list[Any]] = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                choices[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                choices[key] = list(range(dist.low, dist.high + 1, dist.step))
            else:
                raise ConfigError(
                    f"hydra.sweeper.sampler=grid needs a list of values for every parameter, "
                    f"and {key} is continuous ({dist}). Give its values (e.g. "
                    f"{key}=1e-3,3e-3,1e-2 or choice(...) or range(...)), or use another "
                    "sampler (tpe, random, gp, qmc, cmaes)."
                )
        return choices

    def size(self) -> int | None:
        """How many points the grid has (None when a dimension is continuous)."""
        try:
            grid = self.grid()
        except ConfigError:
            return None
        size = 1
        for values in grid.values():
            size *= len(values)
        return size


def as_override(value: Any) -> str:
    """A sampled value as Hydra reads it back on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def distribution_of(override: Any) -> Any:
    """The Optuna distribution of one parsed sweep override (ConfigError if none fits)."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    key = override.get_key_element()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{key}=range(...) holds no value: its stop is exclusive.")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if override.is_interval_sweep():
        low, high, tags = value.start, value.end, set(value.tags)
        unknown = tags - {"log", "int"}
        if unknown:
            raise ConfigError(
                f"{key}: tag(s) {sorted(unknown)} mean nothing to the Optuna sweeper; "
                "interval() takes `log` (log-uniform) and `int` (whole numbers)."
            )
        if not low < high or ("log" in tags and low <= 0):
            raise ConfigError(
                f"{key}=interval({low}, {high}) is empty or, with `log`, not above 0: give "
                "interval(low, high) with 0 < low < high for log, low < high otherwise."
            )
        if "int" in tags:
            return IntDistribution(int(low), int(high), log="log" in tags)
        return FloatDistribution(float(low), float(high), log="log" in tags)
    raise ConfigError(f"{override.input_line}: this sweep is not one the Optuna sweeper can search")


def parse_space(params: dict[str, Any] | None, arguments: list[str]) -> SearchSpace:
    """The space from `hydra.sweeper.params` and the command line's overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    parser = OverridesParser.create()
    space = SearchSpace()
    for line in [*lines, *arguments]:
        try:
            (override,) = parser.parse_overrides([line])
        except OverrideParseException as err:
            raise ConfigError(f"the search space entry {line!r} cannot be read: {err}") from err
        key = override.get_key_element()
        if override.is_sweep_override():
            space.fixed = [f for f in space.fixed if f.split("=", 1)[0] != key]
            space.distributions[key] = distribution_of(override)
        else:
            space.distributions.pop(key, None)  # a fixed value on the command line wins
            space.fixed.append(line)
    return space
