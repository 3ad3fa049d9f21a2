"""The Optuna sweeper's settings (conf/hydra/sweeper/optuna.yaml): read, checked, and turned
into Optuna's sampler and pruner. One place that knows the names.

trainlab.search.optuna_checks checks them when a multirun starts, before anything is
written. The sampler is built in the sweep process; the pruner in each job
(trainlab.pruning), from the same settings, since the job is where a trial is stopped.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.checks import ConfigError

SWEEPER = "hydra_plugins.trainlab_sweepers.optuna_sweeper.OptunaSweeper"
SETTINGS = (
    "n_trials",
    "n_jobs",
    "direction",
    "storage",
    "study_name",
    "sampler",
    "seed",
    "sampler_options",
    "pruner",
    "pruner_options",
    "max_failure_rate",
    "params",
)
SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "grid": "GridSampler",
}
# constant_liar: a trial still running counts as a bad result while others are asked, so
# that parallel trials and workers do not all try the same point
SAMPLER_DEFAULTS = {"tpe": {"n_startup_trials": 8, "constant_liar": True}}
PRUNERS = {
    "asha": "SuccessiveHalvingPruner",
    "median": "MedianPruner",
    "hyperband": "HyperbandPruner",
    "wilcoxon": "WilcoxonPruner",
    "none": "NopPruner",
}
DIRECTIONS = ("minimize", "maximize")


@dataclass
class SweepSettings:
    n_trials: int
    n_jobs: int | None
    directions: list[str]
    storage: str | None
    study_name: str
    sampler: Any  # a name of SAMPLERS, or a sampler object
    seed: int | None
    sampler_options: dict[str, Any] = field(default_factory=dict)
    pruner: Any = "asha"  # a name of PRUNERS, or a pruner object
    pruner_options: dict[str, Any] = field(default_factory=dict)
    max_failure_rate: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


def is_our_sweeper(sweeper_config: Any) -> bool:
    target = OmegaConf.select(sweeper_config, "_target_", default="") if sweeper_config else ""
    return str(target) == SWEEPER


def _whole(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(
            f"hydra.sweeper.{name}={value!r} must be a whole number >= {least}"
            + (": the study's total of trials." if name == "n_trials" else ".")
        )
    return value


def _options(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, dict):
        raise ConfigError(f"hydra.sweeper.{name}={value!r} must be a mapping of keyword arguments.")
    return value


def _choice(name: str, value: Any, known: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value.lower() not in known:
            raise ConfigError(
                f"hydra.sweeper.{name}={value!r} is not one the sweeper knows: choose one of "
                f"{', '.join(known)}."
            )
        return value.lower()
    if value is None and name == "pruner":
        return "none"
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict) and "_target_" not in value or isinstance(value, list | int | float):
        raise ConfigError(
            f"hydra.sweeper.{name}={value!r}: give one of {', '.join(known)}, or a mapping "
            f"with the _target_ of an optuna {name} class and its arguments."
        )
    return value  # a `_target_` mapping (built by `_instantiate`), or an object Hydra built


def settings_of(given: dict[str, Any]) -> SweepSettings:
    """The settings as given to the sweeper (resolved), checked; ConfigError names the bad one."""
    unknown = sorted(set(given) - set(SETTINGS) - {"_target_"})
    if unknown:
        raise ConfigError(
            f"hydra.sweeper.{unknown[0]} is not a setting of the Optuna sweeper; it takes "
            f"{', '.join(SETTINGS)}."
        )
    direction = given.get("direction", "minimize")
    directions = [direction] if isinstance(direction, str) else list(direction or [])
    if len(directions) != 1 or str(directions[0]).lower() not in DIRECTIONS:
        raise ConfigError(
            f"hydra.sweeper.direction={direction!r}: give minimize or maximize. A run has one "
            "objective (optimized_metric), so a study of several is not supported."
        )
    n_jobs = given.get("n_jobs")
    rate = given.get("max_failure_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ConfigError(f"hydra.sweeper.max_failure_rate={rate!r} must be between 0 and 1.")
    seed = given.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"hydra.sweeper.seed={seed!r} must be a whole number or null.")
    params = given.get("params") or {}
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=True)
    if not isinstance(params, dict):
        raise ConfigError(f"hydra.sweeper.params must map keys to their search space: {params!r}")
    study_name = given.get("study_name")
    if study_name is not None and not str(study_name).strip():
        raise ConfigError("hydra.sweeper.study_name is empty: give a name, or leave it out.")
    for name in ("sampler", "pruner"):
        if not isinstance(given.get(name), str | None) and given.get(f"{name}_options"):
            raise ConfigError(
                f"hydra.sweeper.{name}_options applies to the {name}s named by a word; a "
                f"{name} given by _target_ takes its arguments in that mapping."
            )
    return SweepSettings(
        n_trials=_whole("n_trials", given.get("n_trials", 20), 1),
        n_jobs=None if n_jobs is None else _whole("n_jobs", n_jobs, 1),
        directions=[str(d).lower() for d in directions],
        storage=given.get("storage"),
        study_name=str(study_name or "optuna"),
        sampler=_choice("sampler", given.get("sampler", "tpe"), SAMPLERS),
        seed=seed,
        sampler_options=_options("sampler_options", given.get("sampler_options")),
        pruner=_choice("pruner", given.get("pruner", "asha"), PRUNERS),
        pruner_options=_options("pruner_options", given.get("pruner_options")),
        max_failure_rate=float(rate),
        params={str(k): str(v) for k, v in params.items()},
    )


def _build(cls: type, what: str, options: dict[str, Any], fixed: dict[str, Any]) -> Any:
    """cls(**fixed, **options), refusing options it does not take with the ones it does."""
    parameters = inspect.signature(cls).parameters
    accepted = [p for p in parameters if p not in ("self", "kwargs")]
    wrong = sorted(set(options) - set(accepted))
    if wrong:
        raise ConfigError(
            f"hydra.sweeper.{what}_options.{wrong[0]} is not an argument of optuna's "
            f"{cls.__name__}; it takes {', '.join(accepted)}."
        )
    for key, value in options.items():
        wanted = _plain_type(parameters[key].annotation)
        if wanted is not None and not _fits(value, wanted):
            raise ConfigError(
                f"hydra.sweeper.{what}_options.{key}={value!r}: optuna's {cls.__name__} takes "
                f"{parameters[key].annotation} there."
            )
    try:
        with warnings.catch_warnings():  # ours to choose, not the user's to be warned about
            warnings.filterwarnings("ignore", message=".*constant_liar.*")
            return cls(**{**fixed, **options})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optuna's {cls.__name__}({options}) refused: {err}") from err


PLAIN = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _plain_type(annotation: Any) -> tuple[type, ...] | None:
    """The types an annotation such as `int`, `float | None` or "int" allows; None when it is
    anything richer (then Optuna's own check decides)."""
    names = [n.strip() for n in str(getattr(annotation, "__name__", annotation)).split("|")]
    if not names or any(n not in PLAIN and n != "None" for n in names):
        return None
    allowed = tuple(t for n in names if n in PLAIN for t in PLAIN[n])
    return allowed + ((type(None),) if "None" in names else ())


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed)


def _instantiate(value: Any, name: str) -> Any:
    """A sampler or pruner given as a `_target_` mapping (e.g. optuna.pruners.ThresholdPruner
    with its arguments), built; an object already built is returned as it is."""
    if not isinstance(value, dict):
        return value
    from hydra.utils import instantiate

    try:
        return instantiate(value)
    except Exception as err:
        raise ConfigError(f"hydra.sweeper.{name}={value} cannot be built: {err}") from err


def build_sampler(settings: SweepSettings, grid: dict[str, list[Any]] | None = None) -> Any:
    import optuna

    if not isinstance(settings.sampler, str):  # by _target_: seeded too, unless it says
        given = settings.sampler
        if isinstance(given, dict) and "seed" not in given and settings.seed is not None:
            from hydra.utils import get_class

            with contextlib.suppress(Exception):
                if "seed" in inspect.signature(get_class(given["_target_"])).parameters:
                    given = {**given, "seed": settings.seed}
        return _instantiate(given, "sampler")
    cls = getattr(optuna.samplers, SAMPLERS[settings.sampler])
    fixed: dict[str, Any] = {"seed": settings.seed, **SAMPLER_DEFAULTS.get(settings.sampler, {})}
    if settings.sampler == "grid":
        fixed["search_space"] = grid or {}
    return _build(cls, "sampler", settings.sampler_options, fixed)


def pruner_defaults(name: str, max_epochs: int | None, cv_folds: int) -> dict[str, Any]:
    """What a pruner waits for before it stops a trial, from the length of a job: steps are
    epochs (folds when cross-validating); the first decision comes after a tenth of the
    epochs (at least one), so that the earliest, noisiest epochs decide nothing."""
    steps = cv_folds if cv_folds else max(1, max_epochs or 1)
    first = 1 if cv_folds else max(1, math.ceil(steps / 10))
    if name == "asha":  # 4: Optuna's own default, and in scripts/bench_pruning.py it spent
        return {"min_resource": first, "reduction_factor": 4}  # under half the epochs on every seed
    if name == "hyperband":
        return {"min_resource": first, "max_resource": steps, "reduction_factor": 3}
    if name == "median":
        return {"n_startup_trials": 5, "n_warmup_steps": first - 1}
    if name == "wilcoxon":
        return {"p_threshold": 0.1}
    return {}


def build_pruner(settings: SweepSettings, max_epochs: int | None, cv_folds: int) -> Any:
    import optuna

    if not isinstance(settings.pruner, str):
        return _instantiate(settings.pruner, "pruner")
    cls = getattr(optuna.pruners, PRUNERS[settings.pruner])
    fixed = pruner_defaults(settings.pruner, max_epochs, cv_folds)
    return _build(cls, "pruner", settings.pruner_options, fixed)
