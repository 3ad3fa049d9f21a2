"""The Optuna sweeper's ask-launch-tell loop, resumable, telling the study what each job
really did (hparams_search=optuna; the plugin is hydra_plugins.trainlab_sweepers).

hydra-optuna-sweeper 1.3 tells the study every job's return value as COMPLETE. A diverged or
failed job returns the worst objective (±1e9, trainlab.record.worst_objective) so that the
sweep goes on, and TPE and `study.best_trial` would take that fake value for a result. Here
each job's metrics.json decides: `completed` is told with its value; `diverged`, `failed`
(also a job whose process died) and `interrupted` are told as TrialState.FAIL, with the
status and error as the trial's user attributes (`trainlab_status`, `trainlab_error`).
A sweep stopped by a signal tells its trials in flight the same way before it ends.
A new SQLite study file gets the umask's mode, as every other file of the sweep does
(`create_sqlite_file`), so that the group can continue the study.

The rest follows the plugin (search space, fixed parameters, GridSampler, n_jobs trials per
batch, max_failure_rate over jobs that raised, optimization_results.yaml), reusing its
methods; its `sweep` is the function this one replaces.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from trainlab.search.records import read_record
from trainlab.search.stopping import SweepStopped

log = logging.getLogger(__name__)


def create_sqlite_file(storage: Any) -> None:
    """For a `sqlite:///<path>` storage whose file does not exist yet: create it empty, with
    the mode every other file of the sweep gets (0o666 & ~umask; SQLite would create it 0644,
    whatever the umask, and the group could not continue the study). SQLite takes an empty
    file for a new database."""
    if not (isinstance(storage, str) and storage.startswith("sqlite:")):
        return
    from sqlalchemy.engine import make_url

    database = make_url(storage).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):  # another process created it first
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def load_existing(impl) -> None:
    """Continue the study stored in the sweep directory, if there is one: job numbers after
    its trials (no job directory reused), and fresh random draws (the seeded sampler would
    replay its first suggestions)."""
    import optuna

    Path(impl.sweep_dir).mkdir(parents=True, exist_ok=True)  # SQLite needs its folder
    if not (impl.storage and impl.study_name):
        return
    create_sqlite_file(impl.storage)
    try:
        study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
    except KeyError:  # no such study yet: a fresh sweep
        return
    impl.job_idx = len(study.trials)
    impl.sampler.reseed_rng()
    log.info("continuing study %r after its %d trials", impl.study_name, impl.job_idx)


def stopped_job(job_dir: Path) -> tuple[Any, None, dict[str, Any]]:
    """A trial whose job gave nothing back because the sweep stopped: what its record says
    (a job in the sweep process ended `interrupted`), or never ran."""
    from optuna.trial import TrialState

    record = read_record(job_dir) if job_dir.is_dir() else None
    attrs = {"trainlab_status": (record or {}).get("status", "never ran")}
    if job_dir.is_dir() and record is None:
        attrs["trainlab_status"] = "interrupted"
    if (record or {}).get("error"):
        attrs["trainlab_error"] = str(record["error"])[:500]
    return TrialState.FAIL, None, attrs


def outcome(ret, n_objectives: int) -> tuple[Any, list[float] | None, dict[str, Any]]:
    """(state, values, user attributes) to tell for one job's JobReturn."""
    from hydra.core.utils import JobStatus
    from optuna.trial import TrialState

    job_dir = OmegaConf.select(ret.hydra_cfg or OmegaConf.create(), "hydra.runtime.output_dir")
    record = read_record(job_dir) or {}
    status = record.get("status")
    attrs = {"trainlab_status": status or "no record"}
    if record.get("error"):
        attrs["trainlab_error"] = str(record["error"])[:500]
    # every job of this template leaves a record: none means it never got to say how it ended
    if ret.status != JobStatus.COMPLETED or status != "completed":
        return TrialState.FAIL, None, attrs
    value = ret.return_value
    try:
        values = [float(v) for v in (value if n_objectives > 1 else [value])]
    except (TypeError, ValueError):
        attrs["trainlab_error"] = f"the job returned {value!r}, not a number"
        return TrialState.FAIL, None, attrs
    if len(values) != n_objectives:
        attrs["trainlab_error"] = f"{len(values)} values for {n_objectives} objectives"
        return TrialState.FAIL, None, attrs
    return TrialState.COMPLETE, values, attrs


def tell(study, trial, ret, n_objectives: int, job_dir: Path | None = None) -> bool:
    """Tell one trial; returns whether it counts as a failure (a job that raised). Without a
    JobReturn (the sweep stopped), `job_dir` is where the job would have written."""
    from hydra.core.utils import JobStatus
    from optuna.trial import TrialState

    if ret is None:
        state, values, attrs = stopped_job(job_dir)
    else:
        state, values, attrs = outcome(ret, n_objectives)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as err:  # GridSampler stops the study from its after_trial hook
        if "Study.stop" not in str(err):
            raise
    if state == TrialState.FAIL:
        log.warning("trial %d: %s, told to the study as failed", trial.number, attrs)
    return ret is not None and ret.status == JobStatus.FAILED


def run_study(impl, arguments: list[str]) -> None:
    """OptunaSweeperImpl.sweep, telling the study each job's real outcome (module text)."""
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    load_existing(impl)
    impl._process_searchspace_config()
    params_conf = impl._parse_sweeper_params_config() + list(arguments)
    grid = (
        isinstance(impl.sampler, functools.partial)
        and impl.sampler.func == optuna.samplers.GridSampler
    )
    distributions, fixed_params = create_params_from_overrides(params_conf)
    search_space = dict(impl.search_space_distributions or {})
    search_space.update(distributions)
    if grid:
        choices = {name: impl._to_grid_sampler_choices(d) for name, d in search_space.items()}
        impl.sampler = impl.sampler(choices)
        size = functools.reduce(lambda n, c: n * len(c), choices.values(), 1)
        impl.n_trials = min(impl.n_trials, size)
    for name in fixed_params:
        search_space.pop(name, None)
    directions = impl._get_directions()
    study = optuna.create_study(
        study_name=impl.study_name,
        storage=impl.storage,
        sampler=impl.sampler,
        directions=directions,
        load_if_exists=True,
    )
    OmegaConf.save(impl.config, Path(impl.sweep_dir) / "multirun.yaml")  # for the report
    log.info(
        "study %s in %s, sampler %s", study.study_name, impl.storage, type(impl.sampler).__name__
    )

    to_go = impl.n_trials
    while to_go > 0:
        trials = [study.ask() for _ in range(min(to_go, impl.n_jobs))]
        overrides = impl._configure_trials(trials, search_space, fixed_params)
        try:
            returns = list(impl.launcher.launch(overrides, initial_job_idx=impl.job_idx))
        except BaseException as stop:  # a signal (SweepStopped, or a job's SystemExit)
            given = stop.returns if isinstance(stop, SweepStopped) else []
            for i, trial in enumerate(trials):
                ret = given[i] if i < len(given) else None
                # the job's directory with the default hydra.sweep.subdir (its number)
                job_dir = Path(impl.sweep_dir) / str(impl.job_idx + i)
                tell(study, trial, ret, len(directions), job_dir)
            raise
        impl.job_idx += len(returns)
        failures = sum(
            tell(study, t, r, len(directions)) for t, r in zip(trials, returns, strict=True)
        )
        if failures / len(returns) > impl.max_failure_rate:
            log.error(
                "%d of %d jobs raised, more than max_failure_rate=%s",
                failures,
                len(returns),
                impl.max_failure_rate,
            )
            for ret in returns:
                _ = ret.return_value  # raises the job's own error
        to_go -= len(trials)
    write_results(impl, study, directions)


def write_results(impl, study, directions: list[str]) -> None:
    """optimization_results.yaml, as the plugin writes it; best of the completed trials."""
    from optuna.trial import TrialState

    results: dict[str, Any] = {"name": "optuna"}
    if len(directions) > 1:
        results["solutions"] = [{"params": t.params, "values": t.values} for t in study.best_trials]
    elif any(t.state == TrialState.COMPLETE for t in study.trials):
        best = study.best_trial
        results.update(best_params=best.params, best_value=best.value)
        log.info("best parameters: %s, value %s", best.params, best.value)
    else:
        results.update(best_params=None, best_value=None)
        log.warning("no trial of the study completed: no best parameters")
    OmegaConf.save(OmegaConf.create(results), Path(impl.sweep_dir) / "optimization_results.yaml")
