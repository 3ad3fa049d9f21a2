"""Jobs of a sweep that differ only in the values they set are composed by Hydra once.

Hydra composes every job of a sweep from scratch: the defaults tree, every YAML file read
and merged (~0.1 s a job for this template's config tree on a small CPU, a tenth of a
one-second job). The jobs of a grid such as `lr=1e-3,3e-3 batch_size=32,64` share all of
that: they differ only in the values they set at the end. `SiblingConfigs` keeps, for each
set of config-group choices among a job's overrides (`optimizer=sgd`; none in that grid),
the config Hydra composes from those choices alone; each job is that config copied, with its
own values then applied by Hydra's own rule (`ConfigLoaderImpl._apply_overrides_to_config`,
in order, onto the config as composed, as Hydra applies them) and Hydra's record of its
overrides (`hydra.overrides.task`, `hydra.job.override_dirname`) written as Hydra writes it.

Only plain `key=value` overrides take this path: a job with `+key=`, `++key=`, `~key`, `key@pkg=`,
a dict value or a `hydra.` key is composed by Hydra itself, as is every job when the loader
is not Hydra's. tests/test_sibling_configs.py composes a battery of sweeps both ways and
compares the configs.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Sequence
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


def plain_value_setting(override: Override) -> bool:
    """`key=value` on a config key (no +, ++, ~, @package, dict value, hydra. key)."""
    return (
        override.type == OverrideType.CHANGE
        and override.package is None
        and not override.is_sweep_override()
        and not override.is_hydra_override()
        and not isinstance(override.value(), dict)
    )


class SiblingConfigs:
    """`load_sweep_config` as Hydra's, composing each set of group choices once (module text)."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._shared = hasattr(loader, "_parse_overrides_and_create_caching_repo")  # Hydra's
        self._parser = OverridesParser.create() if self._shared else None
        self._repos: dict[tuple, Any] = {}  # (config name, hydra overrides) -> its repository
        self._composed: dict[tuple, bytes] = {}  # (..., group choices) -> Hydra's config, pickled

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: Sequence[str]):
        parsed = self._parser.parse_overrides(list(sweep_overrides)) if self._shared else []
        if not self._shared or not all(plain_value_setting(o) for o in parsed):
            return self._loader.load_sweep_config(master_config, list(sweep_overrides))
        config_name = master_config.hydra.job.config_name
        hydra_overrides = tuple(master_config.hydra.overrides.hydra)
        repo = self._repo(config_name, hydra_overrides)
        is_group = [repo.group_exists(o.key_or_group) for o in parsed]  # Hydra's own rule
        groups = [o.input_line for o, group in zip(parsed, is_group, strict=True) if group]
        values = [o for o, group in zip(parsed, is_group, strict=True) if not group]
        key = (config_name, hydra_overrides, tuple(groups))
        if key not in self._composed:
            config = self._loader.load_sweep_config(master_config, groups)
            self._composed[key] = pickle.dumps(config)
        config = pickle.loads(self._composed[key])  # a copy, as deepcopy but ~3x faster
        return with_values(config, master_config, parsed, values)

    def _repo(self, config_name: str | None, hydra_overrides: tuple[str, ...]) -> Any:
        """The config repository Hydra composes these jobs from (its search path included),
        made once: it tells a config group (`optimizer`) from a config value (`lr`)."""
        key = (config_name, hydra_overrides)
        if key not in self._repos:
            loader = self._loader
            _, repo = loader._parse_overrides_and_create_caching_repo(config_name, list(key[1]))
            self._repos[key] = repo
        return self._repos[key]


def with_values(
    config: DictConfig, master_config: DictConfig, parsed: list[Override], values: list[Override]
) -> DictConfig:
    """A sibling's config: its value settings applied and all its overrides recorded, as
    Hydra's `_load_configuration_impl` and `load_sweep_config` do after composing."""
    try:
        ConfigLoaderImpl._apply_overrides_to_config(values, config)
    except OmegaConfBaseException as err:  # as Hydra's load_configuration says it
        raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from err
    config.hydra.overrides.task = [o.input_line for o in parsed]
    dirname = config.hydra.job.config.override_dirname
    config.hydra.job.override_dirname = get_overrides_dirname(
        overrides=parsed,
        kv_sep=dirname.kv_sep,
        item_sep=dirname.item_sep,
        exclude_keys=dirname.exclude_keys,
    )
    OmegaConf.copy_cache(from_config=master_config, to_config=config)
    return config
