"""One training run, top to bottom: check, build, fit, test, record.

`train(cfg)` is the whole pipeline; `main(cfg)` is what `train.py` hands to Hydra: it
turns a bad value into a one-paragraph message and a non-zero exit.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from trainlab import trackers
from trainlab.batch_warmup import default_micro_batch
from trainlab.building import (
    best_checkpoint,
    build_module,
    build_trainer,
    callbacks_for_optimizer,
    check_model_fits_data,
    check_optimizer_builds,
    instantiate_each,
    keep_best_of_objective,
    optimizer_and_scheduler,
    throughput_of,
)
from trainlab.callbacks import (
    Diverged,
    DivergenceGuard,
    Interrupted,
    LoopTimer,
    StopOnSignal,
    ValidateFinalWeights,
)
from trainlab.callbacks.batch_size_warmup import with_batch_size_warmup
from trainlab.callbacks.ema import evaluated_weights
from trainlab.callbacks.noise_scale import noise_scale_estimator, noise_scale_of
from trainlab.checkpoints import (
    RngState,
    best_checkpoint_in,
    epochs_trained,
)
from trainlab.checks import check_batch_fits, check_optimized_metric
from trainlab.config_checks import check_config, overrides_and_groups
from trainlab.cross_validation import cross_validate
from trainlab.data.sizing import check_sized_from_data
from trainlab.distributed import distributed_job, in_sweep
from trainlab.faults import describe, exit_with_message, full_error_asked, log_traceback
from trainlab.models.width import check_checkpoint_parametrization, parametrization_of
from trainlab.objective import direction_or_default
from trainlab.plan import Plan, make_plan
from trainlab.predicting import check_can_predict, write_predictions
from trainlab.pruning import Pruned, TrialPruning, trial_pruning
from trainlab.record import (
    group_choices,
    hparams_of,
    recorded_hparams,
    worst_objective,
    write_metrics,
)
from trainlab.rundir import read_record
from trainlab.scale import compiled
from trainlab.starting import checkpoint_must_fit, starting_checkpoint, trained_to_the_end
from trainlab.tune import tune_batch_size, tune_lr
from trainlab.tune_noise_scale import tune_noise_scale

log = logging.getLogger(__name__)


def fit_and_test(
    cfg: DictConfig,
    stop: StopOnSignal,
    announce: Callable[[dict[str, Any]], None],
    pruning: TrialPruning | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build, plan, tune (if asked), fit, test; or, with train=false, validate and test a
    checkpoint. `announce(plan)` is called once the plan is known, before any training.
    In an Optuna sweep `pruning` reports each epoch to the trial (Pruned: stopped there).
    Returns (metrics, what trained)."""
    L.seed_everything(cfg.seed, workers=True)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    output_dir = Path(cfg.paths.output_dir)
    previous = read_record(output_dir)  # {} for a fresh run; a resumed one keeps its plan
    ckpt, checkpoint = starting_checkpoint(cfg)

    callbacks = instantiate_each(cfg.get("callbacks"))
    loggers = trackers.opened(instantiate_each(cfg.get("logger")))  # closed by finish()
    trainer = build_trainer(cfg.trainer, callbacks, loggers)
    plan = make_plan(
        batch_size=cfg.batch_size,
        micro_batch_size=default_micro_batch(cfg, trainer.world_size),  # a warmup's start
        world_size=trainer.world_size,
        lr=cfg.lr,
        lr_scaling=cfg.lr_scaling,
        base_batch_size=cfg.base_batch_size,
        lr_scaling_exponent=cfg.lr_scaling_exponent,
    )
    if previous.get("plan", {}).get("tuned") and previous["plan"]["world_size"] == plan.world_size:
        plan = Plan(**previous["plan"])  # a resumed run keeps what tuning chose, without re-tuning
    trainer.accumulate_grad_batches = plan.accumulate_grad_batches

    datamodule = instantiate(cfg.data, batch_size=plan.micro_batch_size)
    check_batch_fits(plan.batch_size, datamodule.train_size())
    optimizer, scheduler = optimizer_and_scheduler(cfg, plan.lr_effective)
    module = build_module(cfg.model, cfg.task, optimizer, scheduler)
    check_model_fits_data(module, datamodule, group_choices().get("data"))
    check_checkpoint_parametrization(checkpoint, module)
    plan = Plan(**{**plan.as_dict(), **parametrization_of(module).as_plan()})
    keep_best_of_objective(module, cfg.optimized_metric, direction_or_default(cfg))
    check_optimizer_builds(module, group_choices())
    check_optimized_metric(cfg.optimized_metric, module.logged_metrics)
    if cfg.get("predict"):  # refused before training, not after it
        check_can_predict(module, datamodule, cfg.predict)
    if cfg.compile:
        module.net = compiled(module.net)
    trainer.callbacks.extend(callbacks_for_optimizer(module.optimizer_factory))  # LR test too

    tuning = cfg.train and ckpt is None
    if tuning and cfg.tune.get("batch_size"):
        plan = tune_batch_size(trainer, module, datamodule, plan, cfg.tune.batch_size)
    if tuning and cfg.tune.get("lr"):
        tuned = tune_lr(trainer, module, datamodule, plan, cfg.tune.lr, output_dir)
        plan.tuned["lr"] = tuned.record  # a fallback (tuned.lr None) keeps the plan's lr
        if tuned.lr is not None:
            plan.tuned["lr_suggested"] = plan.lr_effective = tuned.lr
            module.optimizer_factory, module.scheduler_spec = optimizer_and_scheduler(cfg, tuned.lr)
    if tuning and cfg.tune.get("noise_scale"):
        plan = tune_noise_scale(trainer, module, datamodule, plan, cfg.tune.noise_scale)
    if plan.tuned:
        L.seed_everything(cfg.seed, workers=True)  # the same data order as without tuning
    estimator = noise_scale_estimator(plan) if cfg.get("noise_scale") else None  # or refused
    plan = with_batch_size_warmup(cfg, trainer, plan, datamodule.train_size())
    log.info("plan: %s", plan.as_dict())
    announce(plan.as_dict())

    # after tuning: the LR test diverges on purpose, and must not be checkpointed or resumed
    timer = LoopTimer()
    trainer.callbacks.extend(
        [DivergenceGuard(), RngState(), stop, timer, ValidateFinalWeights(cfg.optimized_metric)]
    )
    if estimator is not None:
        trainer.callbacks.append(estimator)
    reporter = pruning.callback() if pruning is not None else None
    if reporter is not None:
        trainer.callbacks.append(reporter)
    # so runs compare by the knobs in TensorBoard's HParams, MLflow and W&B
    knobs = {**hparams_of(cfg, group_choices()), **plan_summary(plan)}
    trackers.log_hyperparams(trainer.loggers, knobs, cfg, module)
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
            if reporter is not None:
                reporter.raise_if_pruned(trainer, metrics)  # a pruned trial is not tested
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
        "evaluated_weights": evaluated_weights(trainer),
        "noise_scale": noise_scale_of(trainer),
        "torch_threads": torch.get_num_threads(),  # a sweep's parallel jobs share the cores
        "plan": plan.as_dict(),
    }
    if getattr(datamodule, "target_mean", None) is not None:  # val/mse etc. are in these units
        scale = {"mean": datamodule.target_mean, "std": datamodule.target_std}
        trained["target_scale"] = {k: v.tolist() for k, v in scale.items()}
    if ckpt is not None:
        how = "started_from" if cfg.ckpt_path is not None else "resumed_from"
        if not cfg.train:
            how = "evaluated"
        trained[how] = {
            "checkpoint": ckpt,
            "epoch": epochs_trained(checkpoint),  # epochs done (an epoch-end save: all of it)
            "global_step": checkpoint.get("global_step"),
        }
    if cfg.get("predict"):  # <run dir>/predictions_<split>.csv, with the tested weights
        path = write_predictions(trainer, module, datamodule, cfg.predict, best, output_dir)
        trained["predictions"] = str(path)
    return metrics, trained


def plan_summary(plan) -> dict[str, Any]:
    return {f"plan/{k}": v for k, v in plan.as_dict().items() if not isinstance(v, dict)}


def train(cfg: DictConfig, checked: bool = False) -> float:
    """Run the pipeline and write `metrics.json`; returns the objective for sweepers.
    `checked`: check_config already passed on this very cfg (train.py's check_before_start).

    `metrics.json` says `running` (with the plan) once training starts, and at the end
    `completed`, `diverged` (the loss became NaN/inf: an outcome, returned as the worst
    objective), `pruned` (an Optuna sweep's pruner stopped the trial: an outcome too),
    `interrupted` (SIGINT/SIGTERM: a checkpoint was saved, exit code 128 + signal),
    `failed` (raised: recorded, then raised again) or `debug` (a debug mode ran: no
    objective). A run killed with SIGKILL stays `running`; `python train.py resume=<run dir>`
    continues it.
    """
    started = time.perf_counter()
    direction = direction_or_default(cfg)
    known: dict[str, Any] = {}  # the plan, once there is one: every later record carries it
    # resumed or requeued (a fresh run's dir has no record): a stop before the plan is made
    # again keeps the one the run trains with, tuned or not
    previous_plan = read_record(Path(cfg.paths.output_dir)).get("plan")
    if previous_plan:
        known["plan"] = previous_plan

    def finish(status: str, objective: float | None, metrics: dict, **extra: Any) -> Path | None:
        path = write_metrics(
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
        if status != "running":  # MLflow's and W&B's runs get the status and end
            trackers.close(status)
        return path

    def announce(plan: dict[str, Any]) -> None:
        known["plan"] = plan
        finish("running", None, {})

    stop = StopOnSignal(Path(cfg.paths.output_dir) / "checkpoints")
    pruning = None
    try:
        with stop.installed():
            overrides, groups = overrides_and_groups()
            if not checked:
                check_config(cfg, overrides, groups)
            check_sized_from_data(cfg, group_choices(), overrides)
            pruning = trial_pruning(cfg.optimized_metric, cfg.max_epochs, cfg.cv.folds)
            if pruning is not None:
                known["optuna"] = pruning.recorded()
            if cfg.cv.folds:
                metrics, trained = cross_validate(cfg, fit_and_test, stop, announce, pruning)
                objective_key = "cv/mean"
            else:
                metrics, trained = fit_and_test(cfg, stop, announce, pruning)
                objective_key = cfg.optimized_metric
        if objective_key not in metrics:
            raise RuntimeError(
                f"the run ended without logging {objective_key} "
                f"(logged: {', '.join(sorted(metrics))})"
            )
        objective = float(metrics[objective_key])
        if not math.isfinite(objective):
            raise Diverged(f"{objective_key} is {objective} at the end of training")
    except Pruned as pruned:  # an outcome: the study's pruner stopped this trial
        finish("pruned", None, pruned.metrics, pruned=pruned.record)
        return pruned.record["value"]
    except Diverged as err:
        log.warning("%s: recorded as diverged", err)
        finish("diverged", worst_objective(direction), {}, error=str(err))
        return worst_objective(direction)
    except (Interrupted, SIGTERMException):
        signum = stop.signum or signal.SIGTERM
        saved = f"; saved {stop.saved}" if stop.saved else " outside the training loop"
        finish("interrupted", None, {}, error=f"stopped by {signal.Signals(signum).name}{saved}")
        if pruning is not None:
            log.warning("interrupted: the same sweep command again asks this trial's point again")
        elif stop.saved is not None and not cfg.cv.folds:
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
    if debugging(cfg):  # a few batches: its numbers say the code runs, not how well it learns
        finish("debug", None, metrics, trained=trained, debug=group_choices().get("debug"))
        return objective
    path = finish("completed", objective, metrics, trained=trained)
    if path is not None:  # rank 0 wrote it
        log.info("%s = %.4f  (%s)", objective_key, objective, path)
    return objective


def debugging(cfg: DictConfig) -> bool:
    """A debug mode (debug=fdr, limit, overfit, profiler) or Lightning's fast_dev_run: the run
    is recorded `debug`, never as a completed objective a sweep or report would count."""
    return group_choices().get("debug") is not None or bool(cfg.trainer.get("fast_dev_run"))


def log_through_hydra() -> None:
    """`import lightning` adds its own console handler; Hydra's root handlers already print
    (and save to <run dir>/train.log) everything, so without this each line shows twice.
    The framework's tips and one deprecation warning are dropped (trainlab.quiet)."""
    from trainlab.quiet import quiet_framework

    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
    quiet_framework()


def main(cfg: DictConfig, checked: bool = False) -> float:
    """Hydra's task function (`checked`: as train's).

    In a sweep a failing job must not end the sweep: it is recorded `failed` and gives the
    sweeper the worst objective. In a single run any fault is a one-paragraph message (exit
    code 2 for a bad value, 1 otherwise), with the traceback in the run's train.log.
    """
    log_through_hydra()
    try:
        with distributed_job():  # DDP inside a sweep: each job's ranks train that job
            return train(cfg, checked)
    except Exception as err:
        if in_sweep():
            log.error("job failed, the sweep goes on: %s", describe(err))
            log_traceback(err)
            return worst_objective(direction_or_default(cfg))
        if full_error_asked():
            raise
        exit_with_message(err)
