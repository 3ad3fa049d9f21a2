"""The jobs a sweep was to run, so that a report can name the ones that never ran.

A grid (Hydra's basic sweeper) is expanded the way that sweeper expands it: the cartesian
product of `hydra.sweeper.params` and the command line's overrides, in launch order. An
Optuna search plans `hydra.sweeper.n_trials` trials in all (the study's total, earlier runs
of the sweep and other workers included); the ones not drawn have no overrides.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BASIC_SWEEPER = "BasicSweeper"
OPTUNA_SWEEPER = "OptunaSweeper"


@dataclass
class SweepPlan:
    """`grid`: every job's overrides in launch order (job i is `<sweep dir>/<i>` with the
    default `hydra.sweep.subdir`); `trials`: how many trials the study was to hold in all.
    `earlier`: the job dirs there before this sweep started (a grid does not count them)."""

    grid: list[list[str]] | None = None
    trials: int | None = None
    earlier: frozenset[str] = field(default_factory=frozenset)

    def never_ran(self, started: dict[str, list[str] | None]) -> list[tuple[str, list[str] | None]]:
        """(job, overrides) of each planned job that did not start, given the started jobs
        (directory name -> overrides, None where they cannot be read); a trial that was never
        drawn has no number and no overrides."""
        if self.grid is not None:
            seen = {tuple(o) for o in started.values() if o is not None}
            return [
                (str(i), overrides)
                for i, overrides in enumerate(self.grid)
                if tuple(overrides) not in seen and str(i) not in started
            ]
        if self.trials is not None:
            return [("", None)] * max(0, self.trials - len(started))
        return []


def sweep_plan(config, earlier: frozenset[str] = frozenset()) -> SweepPlan:
    """The plan of the multirun `config` (the sweep's config, as in multirun.yaml)."""
    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    if target.endswith(BASIC_SWEEPER):
        return SweepPlan(
            grid=grid_of(sweeper.get("params") or {}, list(config.hydra.overrides.task))
        )
    if OPTUNA_SWEEPER in target and sweeper.get("n_trials") is not None:
        trials = int(sweeper.n_trials)
        if sweeper.get("sampler") == "grid":  # it runs at most the grid's size
            trials = min(trials, grid_size(sweeper, list(config.hydra.overrides.task)) or trials)
        return SweepPlan(trials=trials, earlier=earlier)
    return SweepPlan()


def grid_size(sweeper, overrides: list[str]) -> int | None:
    """How many points an Optuna grid search has (None when it cannot be told)."""
    from omegaconf import OmegaConf

    from trainlab.search.space import parse_space

    try:
        params = OmegaConf.to_container(sweeper.get("params") or {}, resolve=True)
        return parse_space(params, [str(o) for o in overrides]).size()
    except Exception:
        return None


def grid_of(params, overrides: list[str]) -> list[list[str]] | None:
    """The basic sweeper's expansion of its params and the overrides (None if it fails, e.g.
    a glob over config groups, which needs Hydra's config loader)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in overrides]
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        (batch,) = BasicSweeper.split_arguments(parsed, None)
    except Exception as err:
        log.warning("cannot expand the sweep's overrides (%s): jobs that never ran not listed", err)
        return None
    return [list(job) for job in batch]


def saved_plan(sweep_dir: Path) -> SweepPlan:
    """The plan from `<sweep dir>/multirun.yaml` (for a report written by hand, and for each
    job's line on the console): read again only when the file changed."""
    saved = Path(sweep_dir) / "multirun.yaml"
    try:
        stat = saved.stat()
    except OSError:
        return SweepPlan()
    return copy.deepcopy(_plan_of_file(str(saved.absolute()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _plan_of_file(path: str, mtime_ns: int, size: int) -> SweepPlan:
    """~0.1 s a time (a sweep's whole config), which each job's console line would pay."""
    from omegaconf import OmegaConf

    try:
        return sweep_plan(OmegaConf.load(path))
    except Exception:  # not readable, or not a sweep's config: no plan
        return SweepPlan()
