"""What forked jobs would each do cold, done once in the sweep before it forks them.

A forked job starts with whatever its parent had: torch and Lightning, but not the modules
a run imports as it builds (the model, the optimizer, the callbacks, the data's readers) nor
the data a DataModule caches once per process (trainlab.data.arrays), so each job paid for
them again. Here the parent imports every `_target_` of the sweep's config and reads the
data's spec once, and each fork inherits both (its own first fit is still colder than a job
in one process: README, Performance). Nothing here touches CUDA (a fork could not use it),
and a failure only leaves that piece cold: the job itself reports real faults.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)


def targets(node: Any) -> Iterator[str]:
    """Every `_target_` in a config, unresolved (interpolations left alone)."""
    if isinstance(node, DictConfig):
        for key in node:
            value = node._get_node(key)
            if key == "_target_" and not OmegaConf.is_interpolation(node, key):
                yield str(value._value())
            elif isinstance(value, DictConfig | ListConfig):
                yield from targets(value)
    elif isinstance(node, ListConfig):
        for item in node:
            yield from targets(item)


def import_targets(config: DictConfig) -> int:
    """Import the module of each `_target_` (a.b.C -> a.b); how many imported."""
    imported = 0
    for target in set(targets(config)):
        module = target.rpartition(".")[0]
        with contextlib.suppress(Exception):
            importlib.import_module(module)
            imported += 1
    return imported


def warm_up(config: DictConfig) -> None:
    """Before forking the jobs of `config`'s sweep: its imports and its data's spec."""
    imported = import_targets(config)
    try:
        from trainlab.data.spec import spec_of_data_config

        spec_of_data_config(config.data)  # the DataModule's data, cached for each fork
        data = "and its data"
    except Exception as err:  # e.g. a data config that needs the job's own directory
        data = f"but not its data ({type(err).__name__})"
    log.debug("warmed up before forking: %d modules %s", imported, data)
