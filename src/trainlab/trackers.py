"""Runs you can find in MLflow, W&B and TensorBoard: their names, groups, tags and hparams.

The logger configs (conf/logger/*.yaml) ask these resolvers for the run's name, its group
and its tags, so a user can still override any of them on the command line:

- `${trainlab.run_name:}`: what differs, the same in every tool. In a sweep the job number
  plus the overrides that the sweep varies (`3-optimizer=adam,lr=0.003`), in a single run its
  overrides, or the run dir's name when there are none. Never drawn from `random`: the
  `seed` fixes Python's RNG, and MLflow's random names were all the same.
- `${trainlab.run_dirname:}`: the same name, safe as one folder name (TensorBoard's run list
  shows the folder, so it says which lr each run had).
- `${trainlab.sweep_name:}`: the sweep dir relative to outputs/ (null in a single run): the
  W&B group and, in a sweep, the MLflow experiment (`${trainlab.mlflow_experiment:}`).
- `${trainlab.run_tags:}`: task, sweep, job, overrides, run dir and git commit.

`log_hyperparams` gives every logger the same knobs (TensorBoard's HParams plugin with the
objective as its metric) and `close` tags each run with how it ended.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

# statuses of metrics.json -> MLflow's run status: a diverged run is an outcome, not a crash
MLFLOW_STATUS = {
    "completed": "FINISHED",
    "diverged": "FINISHED",
    "pruned": "FINISHED",  # an Optuna pruner stopped it: an outcome too
    "debug": "FINISHED",  # a debug mode ran to its end
    "failed": "FAILED",
    "interrupted": "KILLED",
}
# overrides that say where a run is logged or which run it continues, not what it trains
UNNAMED = {"logger", "resume"}
NAME_LIMIT = 120  # MLflow and W&B show a name this long; a longer one ends in a short hash
log = logging.getLogger(__name__)
_open: list[Any] = []  # this job's loggers (all folds of a cross-validation), not yet closed
_parents: dict[int, str] = {}  # id(MLflow logger) -> its sweep's parent run


def _hydra():
    """Hydra's config of this job, or None outside a Hydra run (a bare compose in tests)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _in_sweep(hydra) -> bool:
    from hydra.types import RunMode

    return hydra is not None and hydra.mode == RunMode.MULTIRUN


def _override_key(text: str) -> str:
    """`+model.x=1` -> `model.x`: the key an override sets, to match a sweep's to a job's."""
    return text.split("=", 1)[0].lstrip("+~")


def job_overrides(hydra) -> list[str]:
    """The overrides of this job as typed (`lr=0.01`), never resolved."""
    if hydra is None:
        return []
    return [str(o) for o in hydra.overrides.task]


def varied_keys(hydra) -> set[str] | None:
    """The keys a sweep varies: those its command line sweeps (`lr=0.001,0.01`, read from
    the sweep dir's multirun.yaml, which Hydra writes before the first job) and those of the
    sweeper's own search space (hydra.sweeper.params, e.g. Optuna's). None when unknown."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: set[str] = set()
    params = hydra.sweeper.get("params") if "sweeper" in hydra else None
    if params:
        keys.update(str(k) for k in params)
    try:
        saved = OmegaConf.load(Path(hydra.sweep.dir) / "multirun.yaml")
        typed = [str(o) for o in saved.hydra.overrides.task]
        parsed = OverridesParser.create().parse_overrides(typed)
    except Exception:  # no multirun.yaml (another sweeper) or one Hydra cannot parse
        return keys or None
    keys.update(o.key_or_group for o in parsed if o.is_sweep_override())
    return keys or None


def _shortened(name: str) -> str:
    """A name within NAME_LIMIT that stays distinct: its head plus a hash of the whole."""
    if len(name) <= NAME_LIMIT:
        return name
    import hashlib

    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: NAME_LIMIT - 9]}~{digest}"


def run_name(*, _root_: DictConfig) -> str:
    """`${trainlab.run_name:}`: the readable name of this run (see the module docstring); a
    cross-validation fold adds `-fold<k>`, so that each fold's run is told apart."""
    hydra = _hydra()
    overrides = [o for o in job_overrides(hydra) if _override_key(o) not in UNNAMED]
    if _in_sweep(hydra):
        varied = varied_keys(hydra)
        shown = [o for o in overrides if varied is None or _override_key(o) in varied]
        name = "-".join([str(hydra.job.num), ",".join(shown)]) if shown else str(hydra.job.num)
    elif overrides:
        name = ",".join(overrides)
    else:
        name = _run_dir(_root_).name
    fold = OmegaConf.select(_root_, "data.fold", default=None)
    if OmegaConf.select(_root_, "cv.folds", default=0) and fold is not None:
        name = f"{name}-fold{fold}"
    return _shortened(name)


def run_dirname(*, _root_: DictConfig) -> str:
    """`${trainlab.run_dirname:}`: the run's name as one folder name (no `/`, no spaces)."""
    return re.sub(r"[^\w.,=+\-@:]", "_", run_name(_root_=_root_))


def _run_dir(root: DictConfig) -> Path:
    """The run's own directory (a fold's when cross-validating)."""
    return Path(str(OmegaConf.select(root, "paths.output_dir", default=".")))


def sweep_name(*, _root_: DictConfig) -> str | None:
    """`${trainlab.sweep_name:}`: the sweep dir relative to outputs/ (its path when outside
    outputs/), e.g. `train/multirun/2026-12-01/22-04-05_ab12`; None in a single run."""
    hydra = _hydra()
    if not _in_sweep(hydra):
        return None
    sweep = Path(str(hydra.sweep.dir)).resolve()
    log_dir = Path(str(OmegaConf.select(_root_, "paths.log_dir", default="."))).resolve()
    try:
        return sweep.relative_to(log_dir).as_posix()
    except ValueError:
        return sweep.as_posix()


def mlflow_experiment(*, _root_: DictConfig) -> str:
    """`${trainlab.mlflow_experiment:}`: one MLflow experiment per sweep, named after its dir
    (its runs table is the sweep, ready to compare), and the task's name for single runs."""
    return sweep_name(_root_=_root_) or str(OmegaConf.select(_root_, "task_name", default="train"))


def mlflow_uri(log_dir: str) -> str:
    """`${trainlab.mlflow_uri:${paths.log_dir}}`: MLFLOW_TRACKING_URI when set (and not
    empty), else the SQLite store outputs/mlflow.db that every run of the project shares."""
    return os.environ.get("MLFLOW_TRACKING_URI") or _project_store(log_dir)


def _project_store(log_dir: str) -> str:
    return f"sqlite:///{log_dir}/mlflow.db"


def mlflow_artifacts(log_dir: str) -> str | None:
    """`${trainlab.mlflow_artifacts:${paths.log_dir}}`: artifacts beside the SQLite store
    (outputs/mlartifacts, not `<cwd>/mlruns`); with MLFLOW_TRACKING_URI set the server's own
    artifact root applies, so None. MLflow itself sets that variable to the store it opens
    (for its subprocesses): the project's own store there is still ours."""
    if mlflow_uri(log_dir) != _project_store(log_dir):
        return None
    return str(Path(log_dir).resolve() / "mlartifacts")


@functools.lru_cache(maxsize=8)
def git_commit(root: str) -> str | None:
    """`git rev-parse HEAD` in the project root; None when it is no git checkout (or no git)."""
    try:
        done = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def run_tags(*, _root_: DictConfig) -> dict[str, str]:
    """`${trainlab.run_tags:}`: what a reader filters runs by, as strings (absent when not
    known): task, sweep, job, overrides, run_dir, git_commit."""
    hydra = _hydra()
    tags: dict[str, Any] = {
        "task": OmegaConf.select(_root_, "task_name", default=None),
        "run_dir": str(_run_dir(_root_)),
        "overrides": " ".join(job_overrides(hydra)),
        "git_commit": git_commit(str(OmegaConf.select(_root_, "paths.root_dir", default="."))),
    }
    if _in_sweep(hydra):
        tags["sweep"] = sweep_name(_root_=_root_)
        tags["job"] = hydra.job.num
    return {k: str(v) for k, v in tags.items() if v not in (None, "")}


def wandb_tags(*, _root_: DictConfig) -> list[str]:
    """`${trainlab.wandb_tags:}`: W&B tags are short labels (64 characters at most): the task
    and `sweep` for a sweep's jobs; the status is added by `close`. The long values (sweep,
    overrides, commit) go to the run's config as `tracking/*`."""
    tags = [str(OmegaConf.select(_root_, "task_name", default="train"))]
    if _in_sweep(_hydra()):
        tags.append("sweep")
    return [t[:64] for t in tags]


def register_tracker_resolvers() -> None:
    """The `${trainlab.run_name:}` ... resolvers of conf/logger/*.yaml (idempotent); never
    cached, since one process runs many jobs of a sweep."""
    for name, fn in (
        ("trainlab.run_name", run_name),
        ("trainlab.run_dirname", run_dirname),
        ("trainlab.sweep_name", sweep_name),
        ("trainlab.mlflow_experiment", mlflow_experiment),
        ("trainlab.mlflow_uri", mlflow_uri),
        ("trainlab.mlflow_artifacts", mlflow_artifacts),
        ("trainlab.run_tags", run_tags),
        ("trainlab.wandb_tags", wandb_tags),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=False)


def _hparam_value(value: Any) -> int | float | str | bool:
    """TensorBoard's HParams take numbers, strings and booleans only: None and the rest as
    text, so that `scheduler: None` is still a column."""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _store_lock(tracking_uri: str | None) -> Path | None:
    """The lock file of a local SQLite store (`<db>.lock`); None for any other store."""
    prefix = "sqlite:///"
    if not tracking_uri or not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri[len(prefix) :] + ".lock")


@functools.cache
def _mlflow_logger_class() -> type:
    from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger

    class MLFlowLogger(LightningMLFlowLogger):
        """Lightning's MLFlowLogger, but the jobs of a parallel sweep (joblib) that open a new
        SQLite store one at a time: MLflow creates and migrates the store when its client is
        built, and two processes migrating one new file fail ('Online migration expected to
        match one row'). The lock is a file beside the store, held only while opening it."""

        def __init__(self, *args: Any, tracking_uri: str | None = None, **kwargs: Any):
            lock = _store_lock(tracking_uri)
            if lock is None:
                super().__init__(*args, tracking_uri=tracking_uri, **kwargs)
                return
            import fcntl

            lock.parent.mkdir(parents=True, exist_ok=True)
            with lock.open("a") as held:
                fcntl.flock(held, fcntl.LOCK_EX)
                super().__init__(*args, tracking_uri=tracking_uri, **kwargs)

    return MLFlowLogger


def __getattr__(name: str) -> Any:
    """`trainlab.trackers.MLFlowLogger` (conf/logger/mlflow.yaml), built on first use, so
    that importing trainlab loads neither Lightning nor MLflow."""
    if name == "MLFlowLogger":
        return _mlflow_logger_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _ensure_mlflow_run(logger: Any) -> None:
    """Create the MLflow run now. Two jobs of a parallel sweep may both create the sweep's
    experiment: the one that loses the race finds it on the second try."""
    from mlflow.exceptions import MlflowException

    try:
        _ = logger.experiment
    except MlflowException:
        _ = logger.experiment


def opened(loggers: list[Any]) -> list[Any]:
    """This job's loggers, as built: `close` ends their runs with the job's status, even when
    the job fails before training (its MLflow run then says `failed`, not nothing)."""
    if getattr(rank_zero_only, "rank", 0) == 0:  # `close` runs on rank 0 only
        _open.extend(logger for logger in loggers if logger not in _open)
    return loggers


@rank_zero_only
def log_hyperparams(loggers: list[Any], params: dict[str, Any], cfg: DictConfig, module: Any):
    """The same knobs in every tool: MLflow params, W&B config (plus the run's tags under
    `tracking/`), hparams.yaml, and TensorBoard's HParams plugin with the objective and what
    the model logs as its metrics (Lightning writes the plugin data only when given metrics,
    and would log them as scalars: here only their names are declared, the values are the
    scalars the run logs under those names). `close` ends their runs."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    names = [cfg.optimized_metric, *getattr(module, "logged_metrics", ())]
    metric_names = list(dict.fromkeys(str(n) for n in names))
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            _ensure_mlflow_run(logger)
            sweep = sweep_name(_root_=cfg)
            if sweep is not None:  # a child of the sweep's parent run
                from trainlab import mlflow_sweep

                lock = _store_lock(logger._tracking_uri)
                tags = run_tags(_root_=cfg)
                _parents[id(logger)] = mlflow_sweep.attach(logger, sweep, tags, lock)
        logger.log_hyperparams(params)
        if isinstance(logger, WandbLogger):
            tags = run_tags(_root_=cfg)
            logger.experiment.config.update({f"tracking/{k}": v for k, v in tags.items()})
        if isinstance(logger, TensorBoardLogger):
            from torch.utils.tensorboard.summary import hparams

            shown = {k: _hparam_value(v) for k, v in params.items()}
            writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams
            for summary in hparams(shown, dict.fromkeys(metric_names, math.nan)):
                writer.add_summary(summary)
            writer.flush()
        opened([logger])


@rank_zero_only
def close(status: str) -> None:
    """Tag this job's runs with how it ended (the status metrics.json records) and end them:
    MLflow's `status` tag and run status (diverged is FINISHED: an outcome), W&B's tags,
    summary and `finish` (else the next job of a sweep in this process would reuse its run)."""

    loggers = list(_open)
    _open.clear()
    for logger in loggers:
        try:
            _close_one(logger, status)
        except Exception as err:  # the run's verdict is in metrics.json: a tracker must not
            log.warning("could not close the %s run: %s", type(logger).__name__, err)


def _close_one(logger: Any, status: str) -> None:
    """One logger's part of `close`."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    if isinstance(logger, MLFlowLogger):
        logger.experiment.set_tag(logger.run_id, "status", status)
        logger.experiment.set_terminated(logger.run_id, MLFLOW_STATUS.get(status, "FAILED"))
        parent = _parents.pop(id(logger), None)
        if parent is not None:
            from trainlab import mlflow_sweep

            mlflow_sweep.job_ended(logger, parent)
    elif isinstance(logger, WandbLogger):
        run = logger.experiment
        run.tags = (*run.tags, status)
        run.summary["status"] = status
        run.finish(exit_code=0 if MLFLOW_STATUS.get(status) == "FINISHED" else 1)
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.flush()
