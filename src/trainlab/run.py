"""One training run, top to bottom: check, build, fit, test, record.

`train(cfg)` is the whole pipeline; `main(cfg)` is what `train.py` hands to Hydra: it
turns a bad value into a one-paragraph message and a non-zero exit.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from trainlab.callbacks import Diverged, DivergenceGuard, ThroughputSummary
from trainlab.checks import (
    ConfigError,
    check_batch_fits,
    check_choice,
    check_knobs,
    check_optimized_metric,
    check_positive_number,
    check_schedule_knobs,
)
from trainlab.distributed import distributed_job, in_sweep
from trainlab.optim import check_weight_decay_groups
from trainlab.plan import check_lr_scaling, make_plan
from trainlab.record import worst_objective, write_metrics
from trainlab.scale import compiled
from trainlab.tune import tune_batch_size, tune_lr

log = logging.getLogger(__name__)


def group_choices() -> dict[str, str]:
    """Which option of each config group this run uses (`optimizer` -> `adam`, ...)."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None}


def hparams_of(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """The knobs a reader compares runs by, as the user chose them."""
    return {
        "optimizer": choices.get("optimizer"),
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size,
        "max_epochs": cfg.max_epochs,
        "scheduler": choices.get("scheduler"),
        "model": choices.get("model"),
        "data": choices.get("data"),
        "seed": cfg.seed,
        "precision": cfg.precision,
    }


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
        return instantiate(
            trainer_cfg,
            callbacks=callbacks,
            logger=loggers or False,
            enable_checkpointing=checkpointing,
        )
    except InstantiationException as err:
        cause = err.__cause__ or err
        settings = ", ".join(
            f"{key}={trainer_cfg.get(key)}"
            for key in ("accelerator", "devices", "strategy", "precision")
        )
        raise ConfigError(f"The trainer cannot be built with {settings}: {cause}") from err


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint, or None (test the final weights) when none was saved."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback else ""
    return path or None


def check_config(cfg: DictConfig) -> None:
    """Every check that needs nothing built: types, ranges, and knobs that contradict each other."""
    check_knobs(
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        max_epochs=cfg.max_epochs,
        seed=cfg.seed,
        direction=cfg.optimized_direction,
        folds=cfg.cv.folds,
    )
    check_schedule_knobs(warmup=cfg.warmup, min_lr_ratio=cfg.min_lr_ratio)
    if cfg.grad_clip is not None:
        check_positive_number("grad_clip", cfg.grad_clip, "1.0")
    check_choice("compile", cfg.compile, (True, False), " (torch.compile the network or not)")
    check_lr_scaling(cfg.lr_scaling)
    check_weight_decay_groups(cfg.weight_decay_groups)
    if cfg.cv.folds and "fold" not in cfg.data:
        raise ConfigError(
            f"cv.folds={cfg.cv.folds} needs a datamodule that can cut folds (data=digits); "
            f"this data config has no `fold` argument. Use cv.folds=0."
        )
    if str(cfg.optimized_metric).startswith("test/") and (not cfg.test or cfg.cv.folds):
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric} needs the test stage, but "
            f"test={cfg.test} and cv.folds={cfg.cv.folds} (cross-validation never looks at the "
            "test split): optimize a val/ metric, or set test=true without cv.folds."
        )


def optimizer_and_scheduler(cfg: DictConfig, lr: float) -> tuple[Any, Any]:
    """The optimizer partial and scheduler spec with every `${lr}` in their config set to `lr`
    (the plan's effective lr, or the LR range test's suggestion), not the raw knob."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, "lr", lr)
    return instantiate(cfg.optimizer), instantiate(cfg.scheduler)


def fit_and_test(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build, plan, tune (if asked), fit, test. Returns (metrics, what trained)."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

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
    trainer.accumulate_grad_batches = plan.accumulate_grad_batches

    datamodule = instantiate(cfg.data, batch_size=plan.micro_batch_size)
    check_batch_fits(plan.batch_size, datamodule.train_size())
    optimizer, scheduler = optimizer_and_scheduler(cfg, plan.lr_effective)
    # objects go in by a call, not through instantiate's kwargs, which would turn a
    # dataclass such as SchedulerSpec into a config node
    module = instantiate(cfg.model, _partial_=True)(optimizer=optimizer, scheduler=scheduler)
    check_optimized_metric(cfg.optimized_metric, module.logged_metrics)
    if cfg.compile:
        module.net = compiled(module.net)

    if cfg.tune.get("batch_size"):
        plan = tune_batch_size(trainer, module, datamodule, plan, cfg.tune.batch_size)
    if cfg.tune.get("lr"):
        suggested = tune_lr(trainer, module, datamodule, plan, cfg.tune.lr, output_dir)
        plan.tuned["lr_suggested"] = suggested
        plan.lr_effective = suggested
        module.optimizer_factory, module.scheduler_spec = optimizer_and_scheduler(cfg, suggested)
    if plan.tuned:
        L.seed_everything(cfg.seed, workers=True)  # the same data order as without tuning
    log.info("plan: %s", plan.as_dict())

    trainer.callbacks.append(DivergenceGuard())  # after tuning: the LR test diverges on purpose
    for logger in trainer.loggers:  # so runs compare by the knobs in TensorBoard, MLflow, ...
        logger.log_hyperparams({**hparams_of(cfg, group_choices()), **plan_summary(plan)})
    trainer.fit(module, datamodule=datamodule)
    metrics = dict(trainer.callback_metrics)
    best = best_checkpoint(trainer)
    if cfg.test:
        for results in trainer.test(module, datamodule=datamodule, ckpt_path=best):
            metrics.update(results)

    schedulers = [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs]
    trained = {
        "optimizer": module.optimizer_built,
        "scheduler": schedulers[0] if schedulers else None,
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "best_checkpoint": best,
        "throughput": throughput_of(trainer),
        "plan": plan.as_dict(),
    }
    return metrics, trained


def throughput_of(trainer: L.Trainer) -> dict[str, float] | None:
    """The last training numbers of the ThroughputMonitor, if the run had one."""
    for callback in trainer.callbacks:
        if isinstance(callback, ThroughputSummary):
            return callback.summary or None
    return None


def plan_summary(plan) -> dict[str, Any]:
    return {f"plan/{k}": v for k, v in plan.as_dict().items() if not isinstance(v, dict)}


def cross_validate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
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
        fold_metrics, fold_trained = fit_and_test(fold_cfg)
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


def train(cfg: DictConfig) -> float:
    """Run the pipeline and write `metrics.json` last; returns the objective for sweepers.

    A run ends `completed`, `diverged` (the loss became NaN/inf: an outcome, returned as the
    worst objective) or `failed` (raised: recorded, then raised again).
    """
    started = time.perf_counter()
    direction = cfg.optimized_direction

    def finish(status: str, objective: float | None, metrics: dict, **extra: Any) -> Path | None:
        return write_metrics(
            Path(cfg.paths.output_dir),
            status=status,
            objective=objective,
            optimized_metric=cfg.optimized_metric,
            direction=direction,
            metrics=metrics,
            hparams=hparams_of(cfg, group_choices()),
            duration_s=time.perf_counter() - started,
            **extra,
        )

    try:
        check_config(cfg)
        if cfg.cv.folds:
            metrics, trained = cross_validate(cfg)
            objective_key = "cv/mean"
        else:
            metrics, trained = fit_and_test(cfg)
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
    except BaseException as err:
        finish("failed", None, {}, error=f"{type(err).__name__}: {err}")
        raise
    plan = trained.pop("plan")
    path = finish("completed", objective, metrics, plan=plan, trained=trained)
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
    sweeper the worst objective. In a single run a ConfigError is a one-paragraph message
    and exit code 2, not a traceback.
    """
    log_through_hydra()
    try:
        with distributed_job():  # DDP inside a sweep: each job's ranks train that job
            return train(cfg)
    except Exception as err:
        if in_sweep():
            log.error("job failed, the sweep goes on: %s: %s", type(err).__name__, err)
            return worst_objective(cfg.optimized_direction)
        if not isinstance(err, ConfigError) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
