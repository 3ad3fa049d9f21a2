"""One worker of an Optuna sweep, top to bottom: read the settings, open (or continue) the
study, ask-launch-tell until the study holds n_trials, write the results.

Several workers may run this at once on one sweep dir (the same command on several machines,
or several SLURM jobs): see trainlab.search.optuna_study for how they share the study.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.checks import ConfigError
from trainlab.record import write_text_atomic
from trainlab.search.ask_lock import ask_lock
from trainlab.search.optuna_settings import SweepSettings, build_pruner, build_sampler, settings_of
from trainlab.search.optuna_study import (
    ask_batch,
    counted,
    foreign_jobs,
    launch_batch,
    requeue_untried,
    settle_dead_workers,
)
from trainlab.search.space import parse_space
from trainlab.search.storage import (
    OLD_STUDY,
    is_journal,
    open_storage,
    storage_spec,
    write_study_file,
)

log = logging.getLogger(__name__)


def launcher_parallelism(config: DictConfig, n_trials: int) -> int:
    """How many trials to launch at once when hydra.sweeper.n_jobs is not given: as many as
    the launcher runs at once (`hydra/launcher=joblib hydra.launcher.n_jobs=K`), else 1 (a
    cluster launcher such as submitit runs hydra.sweeper.n_jobs trials per array: with all
    of them at once the sampler would learn nothing from the earlier ones)."""
    from trainlab.search.joblib_settings import LAUNCHER, parallel_jobs

    launcher = config.hydra.get("launcher") or {}
    target = str(launcher.get("_target_", ""))
    if target.endswith(LAUNCHER):
        settings = OmegaConf.to_container(launcher, resolve=True)
        settings.pop("_target_", None)
        return parallel_jobs(settings, n_trials)
    value = launcher.get("n_jobs")  # joblib's own launcher; submitit: hydra.sweeper.n_jobs
    if isinstance(value, int) and value > 0:
        return min(value, n_trials)
    return 1


def _check_old_study(sweep_dir: Path, storage: Any) -> None:
    old = sweep_dir / OLD_STUDY
    if storage is None and old.exists() and not (sweep_dir / "optuna.journal").exists():
        url = f"sqlite:///{old.resolve()}"
        raise ConfigError(
            f"{sweep_dir} holds a study of the old Optuna sweeper ({OLD_STUDY}, optuna 2.10), "
            "and this sweeper keeps its studies in optuna.journal. To continue the old study "
            f"upgrade it once with  optuna storage upgrade --storage {url}  and add "
            f"hydra.sweeper.storage={url} to the command; or give a new hydra.sweep.dir."
        )


class SweepFailed(RuntimeError):
    """More of this worker's trials failed than hydra.sweeper.max_failure_rate allows."""


def _hidden(spec: str) -> str:
    """The storage as shown in the log: a database URL without its password."""
    if is_journal(spec):
        return spec
    from sqlalchemy.engine import make_url

    return make_url(spec).render_as_string(hide_password=True)


def open_study(
    settings: SweepSettings,
    sweep_dir: Path,
    sampler: Any,
    metric: str | None = None,
    pruner: Any = None,
):
    """The study, created or continued; ConfigError when it cannot be continued as asked.
    RunDirGuard calls it first (without a sampler), before the sweep writes anything: what
    is refused leaves no new file behind."""
    import optuna

    spec = storage_spec(settings.storage, sweep_dir)
    _check_old_study(sweep_dir, settings.storage)
    new_file = _new_file(spec)
    storage = None if new_file else open_storage(spec)
    existing = None
    if storage is not None:
        try:
            existing = optuna.load_study(study_name=settings.study_name, storage=storage)
        except KeyError:  # no such study yet
            existing = None
    foreign = foreign_jobs(sweep_dir, existing)
    if foreign:
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} holds jobs that are no trials of the study "
            f"{settings.study_name!r} ({', '.join(foreign[:5])}): its trials would write over "
            "them. Give a new hydra.sweep.dir."
        )
    found = [d.name.lower() for d in existing.directions] if existing else settings.directions
    if found != settings.directions:
        raise ConfigError(
            f"the study {settings.study_name!r} in {_hidden(spec)} was made to "
            f"{', '.join(found)}, and this sweep would {', '.join(settings.directions)}: give "
            "a new hydra.sweep.dir (or hydra.sweeper.study_name) for the other direction."
        )
    known = existing.user_attrs.get("trainlab_objective") if existing else None
    if metric and known and known != metric:
        raise ConfigError(
            f"the study {settings.study_name!r} in {_hidden(spec)} holds values of {known}, "
            f"and this sweep optimizes {metric}: the two cannot be compared in one study. Give "
            f"a new hydra.sweep.dir (or hydra.sweeper.study_name), or optimized_metric={known}."
        )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "Using an existing study"
    try:
        study = optuna.create_study(
            study_name=settings.study_name,
            storage=storage or open_storage(spec),
            sampler=sampler,
            pruner=pruner,
            directions=settings.directions,
            load_if_exists=True,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    if metric and not known:
        study.set_user_attr("trainlab_objective", metric)
    return study, spec


def _new_file(spec: str) -> bool:
    """A journal or SQLite file that does not exist yet: no study to check, and nothing is
    created until the checks pass."""
    if is_journal(spec):
        return not Path(spec).exists()
    if spec.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(spec).database
        return bool(database) and database != ":memory:" and not Path(database).exists()
    return False


def _named(choice: Any) -> str:
    """A sampler's or pruner's name as given, or its class's for one given by `_target_`."""
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        return str(choice.get("_target_", choice)).rsplit(".", 1)[-1]
    return type(choice).__name__


def run_study(sweeper: Any, arguments: list[str]) -> None:
    """The worker's whole run (module text); ConfigError for a setting that cannot work."""

    config = sweeper.config
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    settings = settings_of(sweeper.settings)
    space = parse_space(settings.params, arguments)
    grid = space.grid() if settings.sampler == "grid" else None
    n_trials = min(settings.n_trials, space.size() or 1) if grid is not None else settings.n_trials
    metric = str(OmegaConf.select(config, "optimized_metric", default="") or "") or None
    max_epochs = OmegaConf.select(config, "max_epochs", default=None)
    cv_folds = int(OmegaConf.select(config, "cv.folds", default=0) or 0)
    study, spec = open_study(
        settings,
        sweep_dir,
        build_sampler(settings, grid),
        metric=metric,
        pruner=build_pruner(settings, max_epochs, cv_folds),  # Hyperband also steers TPE
    )
    write_study_file(
        sweep_dir,
        storage=spec,
        study_name=study.study_name,
        directions=settings.directions,
        sampler=_named(settings.sampler),
        pruner=_named(settings.pruner),
        n_trials=n_trials,
    )
    write_text_atomic(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(config))  # for the report
    log.info(
        "Optuna study %r, %d of %d trials so far, sampler %s, pruner %s; storage: %s  "
        "(watch it with: optuna-dashboard %s)",
        study.study_name,
        counted(study),
        n_trials,
        _named(settings.sampler),
        _named(settings.pruner),
        _hidden(spec),
        _hidden(spec),
    )
    if counted(study) >= n_trials:
        log.info(
            "the study holds %d trials, n_trials=%d: nothing to run (a larger "
            "hydra.sweeper.n_trials tops it up)",
            counted(study),
            n_trials,
        )
    batch_size = settings.n_jobs or launcher_parallelism(config, n_trials)
    with ask_lock(sweep_dir):
        settle_dead_workers(study, sweep_dir)
        requeue_untried(study)
    first, told = True, []
    while True:
        with ask_lock(sweep_dir):
            trials = ask_batch(study, space, batch_size, n_trials, first)
        first = False
        if not trials:
            break
        told += launch_batch(sweeper, study, trials, space, sweep_dir)
        failed = told.count("failed")
        if settings.max_failure_rate < 1 and failed / len(told) > settings.max_failure_rate:
            write_results(sweep_dir, study)
            raise SweepFailed(
                f"{failed} of the {len(told)} trials this worker ran failed (recorded `failed`: "
                f"an error, or a dead process), more than hydra.sweeper.max_failure_rate="
                f"{settings.max_failure_rate}; the sweep stops. Their errors are in their "
                "metrics.json and in summary.md."
            )
    write_results(sweep_dir, study)


def write_results(sweep_dir: Path, study) -> None:
    """optimization_results.yaml, as hydra-optuna-sweeper wrote it: the best completed trial."""
    from optuna.trial import TrialState

    results: dict[str, Any] = {"name": "optuna"}
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed:
        best = study.best_trial
        results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
        log.info("best trial %d: %s, value %s", best.number, best.params, best.value)
    else:
        results.update(best_params=None, best_value=None)
        log.warning("no trial of the study completed: no best parameters")
    text = OmegaConf.to_yaml(OmegaConf.create(results))
    write_text_atomic(sweep_dir / "optimization_results.yaml", text)
