"""One training run, top to bottom: check, build, fit, test, record.

`train(cfg)` is the whole pipeline; `main(cfg)` is what `train.py` hands to Hydra: it
turns a bad value into a one-paragraph message and a non-zero exit.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from omegaconf import DictConfig

from trainlab.checks import (
    ConfigError,
    check_batch_fits,
    check_knobs,
    check_optimized_metric,
)
from trainlab.record import write_metrics

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
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def build_trainer(
    trainer_cfg: DictConfig, callbacks: list[Callback], loggers: list[Any]
) -> L.Trainer:
    """Lightning's Trainer; its refusals (accelerator, devices, precision) become ConfigErrors."""
    if not loggers:
        # LearningRateMonitor has nowhere to write without a logger and would stop the run
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    try:
        return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)
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


def fit_and_test(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the knobs, build everything from config, fit, test. Returns (metrics, what trained)."""
    check_knobs(
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        max_epochs=cfg.max_epochs,
        seed=cfg.seed,
        precision=cfg.precision,
    )
    if str(cfg.optimized_metric).startswith("test/") and not cfg.test:
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric} needs the test stage, but test=false: "
            "set test=true or optimize a val/ metric."
        )
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    check_batch_fits(datamodule.batch_size, datamodule.train_size())
    # objects go in by a call, not through instantiate's kwargs, which would turn a
    # dataclass such as SchedulerSpec into a config node
    build_module = instantiate(cfg.model, _partial_=True)
    module = build_module(
        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler)
    )
    check_optimized_metric(cfg.optimized_metric, module.logged_metrics)
    trainer = build_trainer(
        cfg.trainer, instantiate_each(cfg.get("callbacks")), instantiate_each(cfg.get("logger"))
    )

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
    }
    return metrics, trained


def train(cfg: DictConfig) -> float:
    """Run the pipeline and write `metrics.json` last; returns the objective for sweepers."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    record = {
        "optimized_metric": cfg.optimized_metric,
        "hparams": hparams_of(cfg, group_choices()),
    }
    try:
        metrics, trained = fit_and_test(cfg)
        if cfg.optimized_metric not in metrics:
            raise RuntimeError(
                f"the run ended without logging {cfg.optimized_metric} "
                f"(logged: {', '.join(sorted(metrics))})"
            )
    except BaseException as err:
        write_metrics(
            output_dir,
            status="failed",
            objective=None,
            metrics={},
            duration_s=time.perf_counter() - started,
            error=f"{type(err).__name__}: {err}",
            **record,
        )
        raise
    objective = float(metrics[cfg.optimized_metric])
    path = write_metrics(
        output_dir,
        status="completed",
        objective=objective,
        metrics=metrics,
        duration_s=time.perf_counter() - started,
        trained=trained,
        **record,
    )
    if path is not None:  # rank 0 wrote it
        log.info("%s = %.4f  (%s)", cfg.optimized_metric, objective, path)
    return objective


def log_through_hydra() -> None:
    """`import lightning` adds its own console handler; Hydra's root handlers already print
    (and save to <run dir>/train.log) everything, so without this each line shows twice."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def main(cfg: DictConfig) -> float:
    """Hydra's task function: a ConfigError is a message and exit code 2, not a traceback."""
    log_through_hydra()
    try:
        return train(cfg)
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
