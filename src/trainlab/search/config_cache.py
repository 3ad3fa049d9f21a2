"""Each job's config composed once, not twice, in a basic sweep.

Hydra's BasicSweeper composes every job's config to check the batch before launching it
(`validate_batch_is_legal`), and then the launcher composes each one again to run it: two
compositions per job, ~0.2 s each for this template's config tree on a small CPU, which in
a sweep of one-second jobs is a fifth of the sweep. `ComposedOnce` stands in for Hydra's
config loader: the check's composition is kept and the launch takes it, one per job's
overrides, so a job runs the very config that was checked, and nothing is kept once it ran.
A job in a process of its own (hydra/launcher=joblib) gets its own composition with it
(`job_context`). Jobs that differ only in their values share one composition by Hydra
(trainlab.search.sibling_configs).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from hydra.types import HydraContext
from omegaconf import DictConfig

from trainlab.search.sibling_configs import SiblingConfigs


class ComposedOnce:
    """Hydra's config loader, whose `load_sweep_config` composes each job's config once:
    the first call composes and keeps a copy, the next with the same overrides takes it.
    (One sweep has one master config: the overrides tell its jobs apart.)"""

    def __init__(self, loader: Any, kept: dict[tuple[str, ...], DictConfig] | None = None):
        self._loader = loader
        self._kept = kept or {}
        self._pickles_kept = kept is not None  # a job's own: it travels with the job
        self._siblings: SiblingConfigs | None = None  # made when first needed

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: Sequence[str]):
        key = tuple(sweep_overrides)
        kept = self._kept.pop(key, None)
        if kept is not None:
            return kept
        if self._siblings is None:
            self._siblings = SiblingConfigs(self._loader)
        config = self._siblings.load_sweep_config(master_config, sweep_overrides)
        self._kept[key] = pickle.loads(pickle.dumps(config))  # a copy: the caller may change it
        return config

    def handed_over(self, overrides: Sequence[str]) -> ComposedOnce:
        """A loader for the job of `overrides` alone, holding its kept config (if any)."""
        key = tuple(overrides)
        kept = self._kept.pop(key, None)
        return ComposedOnce(self._loader, {key: kept} if kept is not None else {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_loader", "_kept", "_pickles_kept", "_siblings"):
            raise AttributeError(name)  # not set yet (while unpickling)
        return getattr(self._loader, name)

    def __getstate__(self) -> dict[str, Any]:
        kept = self._kept if self._pickles_kept else {}  # not every job's config to each job
        return {"_loader": self._loader, "_kept": kept, "_pickles_kept": self._pickles_kept}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _siblings=None)


def composing_once(hydra_context: HydraContext) -> HydraContext:
    """`hydra_context` with its config loader composing each job's config once."""
    if isinstance(hydra_context.config_loader, ComposedOnce):
        return hydra_context
    return HydraContext(
        config_loader=ComposedOnce(hydra_context.config_loader),
        callbacks=hydra_context.callbacks,
    )


def job_context(hydra_context: HydraContext, overrides: Sequence[str]) -> HydraContext:
    """The context to send with one job to a process of its own: with that job's checked
    config when the sweeper kept it, so that the job's process does not compose it again."""
    loader = hydra_context.config_loader
    if not isinstance(loader, ComposedOnce):
        return hydra_context
    return HydraContext(
        config_loader=loader.handed_over(overrides), callbacks=hydra_context.callbacks
    )
