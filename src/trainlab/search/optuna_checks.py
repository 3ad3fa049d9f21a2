"""The Optuna sweeper's settings checked when a multirun starts (RunDirGuard), before anything
is written, so that a bad value is one paragraph and exit code 2 before any trial: the
settings themselves, the search space, the sampler and pruner built once, and (check_study)
the storage and study the sweep would continue.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.checks import ConfigError
from trainlab.search.optuna_settings import (
    SweepSettings,
    build_pruner,
    build_sampler,
    is_our_sweeper,
    settings_of,
)


def check_sweeper(config: DictConfig) -> SweepSettings | None:
    """The sweeper's settings of this multirun, checked (ConfigError); None for another
    sweeper. Builds the sampler and pruner once, so that their options are checked too."""
    node = config.hydra.get("sweeper")
    if not is_our_sweeper(node):
        return None
    try:
        given = OmegaConf.to_container(node, resolve=True)
    except Exception as err:  # a resolver refused (e.g. a direction against the metric)
        said = str(err).split("raised while resolving interpolation: ", 1)[-1].splitlines()[0]
        raise ConfigError(f"the sweeper's settings cannot be resolved: {said}") from None
    settings = settings_of(given)
    _check_direction(config, settings.directions[0])
    cv_folds = int(OmegaConf.select(config, "cv.folds", default=0) or 0)
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if str(subdir) != "${hydra.job.num}":
        raise ConfigError(
            f"hydra.sweep.subdir={subdir}: the Optuna sweeper names each job's directory after "
            "its trial number (the default ${hydra.job.num}), so that workers never share one "
            "and a continued study finds its jobs. Leave hydra.sweep.subdir out."
        )
    if settings.pruner == "wilcoxon":
        _check_wilcoxon(cv_folds, settings.pruner_options.get("p_threshold", 0.1))
    from trainlab.search.space import parse_space

    space = parse_space(settings.params, _task_overrides(config))
    if "seed" in space.distributions:
        raise ConfigError(
            "the Optuna sweep would search over seed (a sweep of seed on the command line, or "
            "in hydra.sweeper.params): the sampler would pick seeds as if they were a "
            "hyperparameter, and the best trial would be the luckiest seed. Fix the seed "
            "(seed=1), then train the best trial's configuration over seeds as a grid: "
            "python train.py -m <its overrides> seed=1,2,3"
        )
    changing = sorted(k for k in space.distributions if _sets_the_objective(k))
    if changing:
        raise ConfigError(
            f"the Optuna sweep would search over {', '.join(changing)}, which sets the objective "
            "(each data set picks its task: accuracy, AUROC, MSE, ...): one study has one "
            "objective and one direction, and would rank an accuracy against an MSE. Run one "
            "study per data set or objective (hydra.sweep.dir apart), or compare them with a "
            "grid sweep, whose report ranks each objective on its own."
        )
    if not space.distributions:
        raise ConfigError(
            "the Optuna sweep has nothing to search: hydra.sweeper.params is empty and the "
            "command line sweeps no key. Add e.g. hydra.sweeper.params.lr='tag(log, "
            "interval(1e-4, 1e-1))', or lr=1e-3,3e-3,1e-2."
        )
    build_sampler(settings, space.grid() if settings.sampler == "grid" else None)
    max_epochs = OmegaConf.select(config, "max_epochs", default=None)
    build_pruner(settings, max_epochs, cv_folds)
    return settings


def check_study(config: DictConfig) -> None:
    """Open (or create) the study this multirun continues, so that a storage that cannot be
    opened, a study made for the other direction or a sweep dir holding other jobs is refused
    (ConfigError) before any trial; nothing for another sweeper."""
    settings = check_sweeper(config)
    if settings is None:
        return
    from pathlib import Path

    from trainlab.search.optuna_sweep import open_study

    metric = OmegaConf.select(config, "optimized_metric", default=None)
    open_study(settings, Path(str(config.hydra.sweep.dir)), sampler=None, metric=metric)


def _check_direction(config: DictConfig, direction: str) -> None:
    """hydra.sweeper.direction set against the objective (minimizing an accuracy): refused,
    since the study would prune and rank the runs upside down."""
    from trainlab.objective import objective_direction

    metric = OmegaConf.select(config, "optimized_metric", default=None)
    given = OmegaConf.select(config, "optimized_direction", default="auto")
    try:
        wanted = objective_direction(metric, given)
    except ConfigError:
        return  # check_config refuses it with its own message
    if metric and direction != wanted:
        raise ConfigError(
            f"hydra.sweeper.direction={direction} while the objective {metric} is to be "
            f"{wanted}d (optimized_direction={given}): the study would prune and rank "
            f"the runs upside down. Leave hydra.sweeper.direction out (hparams_search=optuna "
            "takes the objective's), or set optimized_direction for the metric."
        )


def _check_wilcoxon(cv_folds: int, p_threshold: Any) -> None:
    """The Wilcoxon pruner needs enough folds for its test to reach p_threshold at all: with
    n folds the smallest one-sided p is 1/2^n, and the last fold's decision comes too late."""
    needed = 2
    threshold = float(p_threshold) if isinstance(p_threshold, int | float) else 0.1
    while 0.5**needed >= threshold and needed < 30:
        needed += 1
    if cv_folds <= needed:
        raise ConfigError(
            f"hydra.sweeper.pruner=wilcoxon with cv.folds={cv_folds} can never prune: it "
            "compares a trial with the best one fold by fold, and with p_threshold="
            f"{threshold} its signed-rank test needs {needed} folds before it can decide, "
            f"and one more to spare. Use cv.folds={needed + 1} or more, or pruner=asha."
        )


def _sets_the_objective(key: str) -> bool:
    """A key whose value can change the metric a trial returns, or its direction."""
    sets = ("data", "task", "experiment", "optimized_metric", "optimized_direction")
    return key in sets or key.startswith("task.objective")


def _task_overrides(config: DictConfig) -> list[str]:
    return [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
