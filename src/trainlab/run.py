"""One training run, top to bottom: check, build, fit, test, record.

`train(cfg)` is the whole pipeline; `main(cfg)` is what `train.py` hands to Hydra: it
turns a bad value into a one-paragraph message and a non-zero exit.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from trainlab.callbacks import (
    Diverged,
    DivergenceGuard,
    Interrupted,
    LoopTimer,
    StopOnSignal,
    ThroughputSummary,
    ValidateFinalWeights,
)
from trainlab.checkpoints import (
    AtomicCheckpointIO,
    RngState,
    best_checkpoint_in,
    epochs_trained,
    latest_checkpoint,
    nonfinite_tensors,
    read_checkpoint,
)
from trainlab.checks import ConfigError, check_batch_fits, check_optimized_metric
from trainlab.config_checks import check_config, overrides_and_groups
from trainlab.distributed import distributed_job, in_sweep
from trainlab.faults import describe, exit_with_message, full_error_asked, log_traceback
from trainlab.objective import MODE_OF, best_of, direction_or_default, monitor_of
from trainlab.optim import build_optimizer
from trainlab.plan import Plan, make_plan
from trainlab.record import group_choices, hparams_of, worst_objective, write_metrics
from trainlab.rundir import read_record
from trainlab.scale import compiled
from trainlab.tune import tune_batch_size, tune_lr

log = logging.getLogger(__name__)


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Callbacks or loggers: one object per entry of the group that has a `_target_`."""
    if not group:
        return []
    return [instantiate(n) for n in group.values() if isinstance(n, DictConfig) and "_target_" in n]


def build_trainer(
    trainer_cfg: DictConfig, callbacks: list[Callback], loggers: list[Any]
) -> L.Trainer:
    """Lightning's Trainer; its refusals (accelerator, devices, precision) become ConfigErrors."""
    if not loggers:
        # LearningRateMonitor has nowhere to write without a logger and would stop the run
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # no checkpoint callback configured (callbacks=none): Lightning must not add its own
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    try:
        trainer = instantiate(
            trainer_cfg,
            callbacks=callbacks,
            logger=loggers or False,
            enable_checkpointing=checkpointing,
            plugins=[AtomicCheckpointIO()],  # a kill during a save leaves the old checkpoint
        )
    except InstantiationException as err:
        cause = err.__cause__ or err
        settings = ", ".join(
            f"{key}={trainer_cfg.get(key)}"
            for key in ("accelerator", "devices", "strategy", "precision")
        )
        raise ConfigError(f"The trainer cannot be built with {settings}: {cause}") from err
    check_precision_kept(trainer_cfg.get("precision"), trainer)
    return trainer


def check_precision_kept(asked: Any, trainer: L.Trainer) -> None:
    """Lightning quietly swaps a precision the device lacks (16-mixed becomes bf16-mixed on a
    CPU): the run would train in another precision than it records, so it is refused."""
    from lightning.fabric.connector import _convert_precision_to_unified_args

    try:
        unified = _convert_precision_to_unified_args(asked)
    except ValueError:
        return  # Lightning refused it already, by name
    if unified is not None and str(trainer.precision) != str(unified):
        device = type(trainer.accelerator).__name__.replace("Accelerator", "")
        raise ConfigError(
            f"precision={asked} is not available on this {device}: Lightning would train in "
            f"{trainer.precision} instead, while the record says {asked}. Give "
            f"precision={trainer.precision}, or run on a device that has {unified} "
            "(16-mixed needs a GPU)."
        )


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint, or None (test the final weights) when none was saved."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback else ""
    return path or None


def optimizer_and_scheduler(cfg: DictConfig, lr: float) -> tuple[Any, Any]:
    """The optimizer partial and scheduler spec with every `${lr}` in their config set to `lr`
    (the plan's effective lr, or the LR range test's suggestion), not the raw knob."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, "lr", lr)
    return instantiate(cfg.optimizer), instantiate(cfg.scheduler)


def starting_checkpoint(cfg: DictConfig) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint this run starts from, already checked to be readable: the latest one of
    the run being resumed, or `ckpt_path`; (None, None) for a run from scratch."""
    if cfg.resume is not None:
        run_dir = Path(str(cfg.resume))
        if run_dir.resolve() != Path(cfg.paths.output_dir).resolve():
            raise ConfigError(
                f"resume={run_dir} must continue in that directory, but this run writes to "
                f"{cfg.paths.output_dir}: start it with python train.py resume={run_dir}"
            )
        path = latest_checkpoint(run_dir)
        if path is None:
            raise ConfigError(f"resume={run_dir} has no checkpoints/last.ckpt to continue from.")
        return str(path), read_checkpoint(path, "resume")  # resume_argv checked what is left
    if cfg.ckpt_path is not None:
        checkpoint = read_checkpoint(cfg.ckpt_path, "ckpt_path")
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path} holds NaN or inf weights ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}; written at step "
                f"{checkpoint.get('global_step')}): evaluating or training from them gives "
                "garbage. Give a checkpoint from before the run diverged (the best one in "
                "<run dir>/checkpoints/epoch_*.ckpt)."
            )
        return str(cfg.ckpt_path), checkpoint
    requeued = latest_checkpoint(Path(cfg.paths.output_dir)) if cfg.train else None
    if requeued is not None:
        # a fresh run's directory is new, so a checkpoint there means this is the same job
        # started again: SLURM requeued it (submitit keeps the job's directory)
        log.warning("this run's directory already has %s: continuing from it", requeued)
        return str(requeued), read_checkpoint(requeued, "the requeued job's checkpoint")
    return None, None


@contextmanager
def checkpoint_must_fit(ckpt: str | None, model_choice: str | None) -> Iterator[None]:
    """A checkpoint of another architecture: say which options built it, not a state_dict dump."""
    try:
        yield
    except RuntimeError as err:
        if ckpt is None or "state_dict" not in str(err):
            raise
        saved = Path(ckpt).resolve().parent.parent / ".hydra" / "overrides.yaml"
        options = OmegaConf.load(saved) if saved.is_file() else None
        hint = (
            f" The run that saved it was started with: {' '.join(options) or '(no overrides)'}."
            if options is not None
            else ""
        )
        details = "; ".join(line.strip().rstrip(".")[:300] for line in str(err).splitlines()[1:3])
        raise ConfigError(
            f"ckpt_path={ckpt} does not fit the model this config builds (model={model_choice}): "
            f"{details}. Give the same model and data options as the run that saved it.{hint}"
        ) from err


def fit_and_test(
    cfg: DictConfig, stop: StopOnSignal, announce: Callable[[dict[str, Any]], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build, plan, tune (if asked), fit, test; or, with train=false, validate and test a
    checkpoint. `announce(plan)` is called once the plan is known, before any training.
    Returns (metrics, what trained)."""
    L.seed_everything(cfg.seed, workers=True)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    output_dir = Path(cfg.paths.output_dir)
    previous = read_record(output_dir)  # {} for a fresh run; a resumed one keeps its plan
    ckpt, checkpoint = starting_checkpoint(cfg)

    callbacks = instantiate_each(cfg.get("callbacks"))
    trainer = build_trainer(cfg.trainer, callbacks, instantiate_each(cfg.get("logger")))
    plan = make_plan(
        batch_size=cfg.batch_size,
        micro_batch_size=cfg.micro_batch_size,
        world_size=trainer.world_size,
        lr=cfg.lr,
        lr_scaling=cfg.lr_scaling,
        base_batch_size=cfg.base_batch_size,
    )
    if previous.get("plan", {}).get("tuned") and previous["plan"]["world_size"] == plan.world_size:
        plan = Plan(**previous["plan"])  # a resumed run keeps what tuning chose, without re-tuning
    trainer.accumulate_grad_batches = plan.accumulate_grad_batches

    datamodule = instantiate(cfg.data, batch_size=plan.micro_batch_size)
    check_batch_fits(plan.batch_size, datamodule.train_size())
    optimizer, scheduler = optimizer_and_scheduler(cfg, plan.lr_effective)
    # objects go in by a call, not through instantiate's kwargs, which would turn a
    # dataclass such as SchedulerSpec into a config node
    module = instantiate(cfg.model, _partial_=True)(optimizer=optimizer, scheduler=scheduler)
    keep_best_of_objective(module, cfg.optimized_metric, direction_or_default(cfg))
    check_optimizer_builds(module, group_choices())
    check_optimized_metric(cfg.optimized_metric, module.logged_metrics)
    if cfg.compile:
        module.net = compiled(module.net)

    tuning = cfg.train and ckpt is None
    if tuning and cfg.tune.get("batch_size"):
        plan = tune_batch_size(trainer, module, datamodule, plan, cfg.tune.batch_size)
    if tuning and cfg.tune.get("lr"):
        tuned = tune_lr(trainer, module, datamodule, plan, cfg.tune.lr, output_dir)
        plan.tuned["lr"] = tuned.record  # a fallback (tuned.lr None) keeps the plan's lr
        if tuned.lr is not None:
            plan.tuned["lr_suggested"] = plan.lr_effective = tuned.lr
            module.optimizer_factory, module.scheduler_spec = optimizer_and_scheduler(cfg, tuned.lr)
    if plan.tuned:
        L.seed_everything(cfg.seed, workers=True)  # the same data order as without tuning
    log.info("plan: %s", plan.as_dict())
    announce(plan.as_dict())

    # after tuning: the LR test diverges on purpose, and must not be checkpointed or resumed
    timer = LoopTimer()
    trainer.callbacks.extend(
        [DivergenceGuard(), RngState(), stop, timer, ValidateFinalWeights(cfg.optimized_metric)]
    )
    for logger in trainer.loggers:  # so runs compare by the knobs in TensorBoard, MLflow, ...
        logger.log_hyperparams({**hparams_of(cfg, group_choices()), **plan_summary(plan)})
    metrics: dict[str, Any] = {}
    started = time.perf_counter()
    # resumed or requeued after its last epoch (stopped during the test): only finish it
    finished = (
        cfg.train
        and cfg.ckpt_path is None
        and checkpoint is not None
        and trained_to_the_end(checkpoint, cfg.max_epochs, cfg.trainer.get("max_steps"))
    )
    fits = cfg.train and not finished
    with checkpoint_must_fit(ckpt, group_choices().get("model")):
        if fits:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
            metrics.update(trainer.callback_metrics)
            best = best_checkpoint(trainer)
        else:
            best = (best_checkpoint_in(checkpoint) if finished else None) or ckpt
            for results in trainer.validate(
                module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True
            ):
                metrics.update(results)
        fitted = time.perf_counter()
        if cfg.test:
            for results in trainer.test(
                module, datamodule=datamodule, ckpt_path=best, weights_only=True
            ):
                metrics.update(results)
    tested = time.perf_counter()

    schedulers = [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs]
    trained = {
        "optimizer": module.optimizer_built,
        "scheduler": schedulers[0] if schedulers else None,
        "epochs": epochs_trained(checkpoint) if finished else trainer.current_epoch,
        "optimizer_steps": checkpoint["global_step"] if finished else trainer.global_step,
        "best_checkpoint": best,
        "fit_s": round(fitted - started, 3) if fits else None,
        "loop_s": round(timer.seconds, 3) if timer.seconds is not None else None,
        "test_s": round(tested - fitted, 3) if cfg.test else None,
        "throughput": throughput_of(trainer),
        "plan": plan.as_dict(),
    }
    if ckpt is not None:
        how = "started_from" if cfg.ckpt_path is not None else "resumed_from"
        if not cfg.train:
            how = "evaluated"
        trained[how] = {
            "checkpoint": ckpt,
            "epoch": checkpoint.get("epoch"),
            "global_step": checkpoint.get("global_step"),
        }
    return metrics, trained


def check_optimizer_builds(module: L.LightningModule, choices: dict[str, str]) -> None:
    """Build the optimizer and scheduler once on the module's parameters before any work, so
    that a bad optimizer.* or scheduler.* value is one message naming the option and its
    settings, not an error in the middle of fit."""
    factory, spec = module.optimizer_factory, module.scheduler_spec
    try:
        optimizer = build_optimizer(module, factory, module.hparams.weight_decay_groups)
        if spec is not None:  # built and stepped once: some schedulers read values only then
            scheduler = spec.lightning_config(optimizer, 1000)["scheduler"]  # any length
            if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                with warnings.catch_warnings():  # "step before optimizer.step()": on purpose
                    warnings.simplefilter("ignore")
                    scheduler.step()
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        if isinstance(err, ConfigError):
            raise
        func = getattr(factory, "func", factory)
        settings = ", ".join(f"{k}={v!r}" for k, v in getattr(factory, "keywords", {}).items())
        raise ConfigError(
            f"optimizer={choices.get('optimizer')} ({func.__module__}.{func.__name__} with "
            f"{settings}) and scheduler={choices.get('scheduler')} cannot be built: "
            f"{type(err).__name__}: {err}. Check the optimizer.* and scheduler.* values "
            "against their arguments (python train.py --cfg job)."
        ) from err


def trained_to_the_end(checkpoint: dict[str, Any], max_epochs: int, max_steps: Any) -> bool:
    """The checkpoint has every epoch of max_epochs, or every step of trainer.max_steps."""
    if epochs_trained(checkpoint) >= max_epochs:
        return True
    return isinstance(max_steps, int) and 0 < max_steps <= checkpoint.get("global_step", 0)


def keep_best_of_objective(module: L.LightningModule, metric: str, direction: str) -> None:
    """The module's best-so-far (`val/<name>_best`) tracks the objective's own validation
    metric, with the objective's direction: val/loss_best is the lowest val/loss."""
    name = best_of(metric) or monitor_of(metric).partition("val/")[2]
    if name and f"val/{name}" in module.logged_metrics:
        module.keep_best(name, MODE_OF[direction])


def throughput_of(trainer: L.Trainer) -> dict[str, float] | None:
    """The last training numbers of the ThroughputMonitor, if the run had one."""
    for callback in trainer.callbacks:
        if isinstance(callback, ThroughputSummary):
            return callback.summary or None
    return None


def plan_summary(plan) -> dict[str, Any]:
    return {f"plan/{k}": v for k, v in plan.as_dict().items() if not isinstance(v, dict)}


def cross_validate(
    cfg: DictConfig, stop: StopOnSignal, announce: Callable[[dict[str, Any]], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """K fits, one per stratified fold of train+val, each from the same seed, in fold_<k>/.

    Returns per-fold metrics (`fold<k>/<name>`) plus `cv/mean` and `cv/std` of the optimized
    metric; the test split is never used.
    """
    folds = cfg.cv.folds
    output_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, Any] = {}
    values, trained = [], []
    for k in range(folds):
        fold_cfg = copy.deepcopy(cfg)
        OmegaConf.update(fold_cfg, "data.fold", k)
        OmegaConf.update(fold_cfg, "test", False)
        OmegaConf.update(fold_cfg, "paths.output_dir", str(output_dir / f"fold_{k}"))
        log.info("cross-validation: fold %d of %d", k + 1, folds)
        fold_metrics, fold_trained = fit_and_test(fold_cfg, stop, announce)
        values.append(float(fold_metrics[cfg.optimized_metric]))
        trained.append(fold_trained)
        metrics.update({f"fold{k}/{name}": v for name, v in fold_metrics.items()})
    metrics["cv/mean"] = statistics.fmean(values)
    metrics["cv/std"] = statistics.pstdev(values)
    log.info(
        "cross-validation: %s = %.4f ± %.4f over %d folds",
        cfg.optimized_metric,
        metrics["cv/mean"],
        metrics["cv/std"],
        folds,
    )
    summary = {
        "folds": folds,
        "metric": cfg.optimized_metric,
        "values": values,
        "mean": metrics["cv/mean"],
        "std": metrics["cv/std"],
    }
    return metrics, {"plan": trained[0]["plan"], "folds": trained, "cv": summary}


def recorded_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The knobs the record compares runs by: with train=false those of the run that trained
    the evaluated checkpoint (from its metrics.json), since this run's own trained nothing."""
    if cfg.get("train") is False and cfg.get("ckpt_path"):
        saved = read_record(Path(str(cfg.ckpt_path)).resolve().parent.parent).get("hparams")
        if isinstance(saved, dict):
            return {**saved, "evaluated": str(cfg.ckpt_path)}
    return hparams_of(cfg, group_choices())


def train(cfg: DictConfig) -> float:
    """Run the pipeline and write `metrics.json`; returns the objective for sweepers.

    `metrics.json` says `running` (with the plan) once training starts, and at the end
    `completed`, `diverged` (the loss became NaN/inf: an outcome, returned as the worst
    objective), `interrupted` (SIGINT/SIGTERM: a checkpoint was saved, exit code 128 + signal)
    or `failed` (raised: recorded, then raised again). A run killed with SIGKILL stays
    `running`; `python train.py resume=<run dir>` continues it.
    """
    started = time.perf_counter()
    direction = direction_or_default(cfg)
    known: dict[str, Any] = {}  # the plan, once there is one: every later record carries it
    if cfg.resume is not None:  # an interrupt early in the resumed run keeps the plan
        previous_plan = read_record(Path(cfg.paths.output_dir)).get("plan")
        if previous_plan:
            known["plan"] = previous_plan

    def finish(status: str, objective: float | None, metrics: dict, **extra: Any) -> Path | None:
        return write_metrics(
            Path(cfg.paths.output_dir),
            status=status,
            objective=objective,
            optimized_metric=cfg.optimized_metric,
            direction=direction,
            metrics=metrics,
            hparams=recorded_hparams(cfg),
            duration_s=time.perf_counter() - started,
            **known,
            **extra,
        )

    def announce(plan: dict[str, Any]) -> None:
        known["plan"] = plan
        finish("running", None, {})

    stop = StopOnSignal(Path(cfg.paths.output_dir) / "checkpoints")
    try:
        with stop.installed():
            check_config(cfg, *overrides_and_groups())
            if cfg.cv.folds:
                metrics, trained = cross_validate(cfg, stop, announce)
                objective_key = "cv/mean"
            else:
                metrics, trained = fit_and_test(cfg, stop, announce)
                objective_key = cfg.optimized_metric
        if objective_key not in metrics:
            raise RuntimeError(
                f"the run ended without logging {objective_key} "
                f"(logged: {', '.join(sorted(metrics))})"
            )
        objective = float(metrics[objective_key])
        if not math.isfinite(objective):
            raise Diverged(f"{objective_key} is {objective} at the end of training")
    except Diverged as err:
        log.warning("%s: recorded as diverged", err)
        finish("diverged", worst_objective(direction), {}, error=str(err))
        return worst_objective(direction)
    except (Interrupted, SIGTERMException):
        signum = stop.signum or signal.SIGTERM
        saved = f"; saved {stop.saved}" if stop.saved else " outside the training loop"
        finish("interrupted", None, {}, error=f"stopped by {signal.Signals(signum).name}{saved}")
        if stop.saved is not None and not cfg.cv.folds:
            log.warning(
                "interrupted: continue with  python train.py resume=%s", cfg.paths.output_dir
            )
        raise SystemExit(128 + signum) from None
    except BaseException as err:
        if cfg.resume is None or "plan" in known:  # a refused resume leaves the run's record
            try:
                finish("failed", None, {}, error=describe(err))
            except OSError as unwritable:  # a full disk: the first fault is what to report
                log.error("the failure could not be recorded: %s", describe(unwritable))
        raise
    known["plan"] = trained.pop("plan")
    path = finish("completed", objective, metrics, trained=trained)
    if path is not None:  # rank 0 wrote it
        log.info("%s = %.4f  (%s)", objective_key, objective, path)
    return objective


def log_through_hydra() -> None:
    """`import lightning` adds its own console handler; Hydra's root handlers already print
    (and save to <run dir>/train.log) everything, so without this each line shows twice."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def main(cfg: DictConfig) -> float:
    """Hydra's task function.

    In a sweep a failing job must not end the sweep: it is recorded `failed` and gives the
    sweeper the worst objective. In a single run any fault is a one-paragraph message (exit
    code 2 for a bad value, 1 otherwise), with the traceback in the run's train.log.
    """
    log_through_hydra()
    try:
        with distributed_job():  # DDP inside a sweep: each job's ranks train that job
            return train(cfg)
    except Exception as err:
        if in_sweep():
            log.error("job failed, the sweep goes on: %s", describe(err))
            log_traceback(err)
            return worst_objective(direction_or_default(cfg))
        if full_error_asked():
            raise
        exit_with_message(err)
