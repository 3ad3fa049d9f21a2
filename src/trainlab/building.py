"""Building the run's objects from the composed config: the Trainer (refusing a precision
Lightning would swap), callbacks and loggers, the optimizer and scheduler (built once before
any work, so a bad value is one message), the best-so-far that follows the objective."""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import warnings
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
)
from lightning.pytorch.profilers import PassThroughProfiler
from omegaconf import DictConfig, OmegaConf

from trainlab.callbacks import ThroughputSummary
from trainlab.checkpoints import AtomicCheckpointIO
from trainlab.checks import ConfigError
from trainlab.objective import MODE_OF, best_of, monitor_of
from trainlab.optim import build_optimizer, decay_groups_of
from trainlab.optim.registry import traits_of
from trainlab.tables import LoggedModelSummary, LoggedResults

log = logging.getLogger(__name__)


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Callbacks or loggers: one object per entry of the group that has a `_target_`."""
    if not group:
        return []
    return [instantiate(n) for n in group.values() if isinstance(n, DictConfig) and "_target_" in n]


def build_trainer(
    trainer_cfg: DictConfig, callbacks: list[Callback], loggers: list[Any]
) -> L.Trainer:
    """Lightning's Trainer; its refusals (accelerator, devices, precision) become ConfigErrors.
    The model summary and the test table are logged, not printed (trainlab.tables)."""
    if not loggers:
        # LearningRateMonitor has nowhere to write without a logger and would stop the run
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    callbacks = [*callbacks, *logged_tables(trainer_cfg, callbacks)]
    # no checkpoint callback configured (callbacks=none): Lightning must not add its own
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    try:
        trainer = instantiate(
            trainer_cfg,
            callbacks=callbacks,
            logger=loggers or False,
            enable_checkpointing=checkpointing,
            # a bar only from a callback: without a terminal the progress callback is no bar
            enable_progress_bar=trainer_cfg.get("enable_progress_bar", True)
            and any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in callbacks),
            # a summary only from a callback (logged_tables): Lightning adds no printed one
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],  # a kill during a save leaves the old checkpoint
            **({} if trainer_cfg.get("profiler") else {"profiler": NoProfiler()}),
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


class NoProfiler(PassThroughProfiler):
    """Lightning's default when no profiler is asked for, whose `profile` is one shared null
    context: Lightning enters it around every hook of every callback at every step, and the
    default's generator-based context costs ~0.6 us each time, a few % of a 1 ms step."""

    _none = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._none


def logged_tables(trainer_cfg: DictConfig, callbacks: list[Callback]) -> list[Callback]:
    """The callbacks that log what Lightning would print (the model summary, unless one is
    configured or `trainer.enable_model_summary=false`; the results of test and validate),
    so that train.log has them too."""
    added: list[Callback] = []
    summary = trainer_cfg.get("enable_model_summary", True) is not False
    summary = summary and not trainer_cfg.get("barebones", False)
    if summary and not any(isinstance(c, ModelSummary) for c in callbacks):
        added.append(LoggedModelSummary())
    if not any(isinstance(c, LoggedResults) for c in callbacks):
        added.append(LoggedResults())
    return added


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
    (the plan's effective lr, or the LR range test's suggestion), not the raw knob. Lists
    and dicts arrive as plain Python (`_convert_="all"`): an optimizer keeps them in its
    param groups (`betas: [0.9, 0.95]`), and a checkpoint holding an OmegaConf ListConfig
    would not load with torch's safe `weights_only`."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, "lr", lr)
    return instantiate(cfg.optimizer, _convert_="all"), instantiate(cfg.scheduler, _convert_="all")


def build_module(
    model_cfg: DictConfig, task_cfg: DictConfig | None, optimizer: Any, scheduler: Any
) -> L.LightningModule:
    """The LightningModule of `model_cfg`, given the optimizer partial, the scheduler spec and
    the task (trainlab.tasks.task.Task, from `task_cfg`) when its class takes a `task`.
    Objects go in by a call, not through instantiate's kwargs, which would turn a dataclass
    such as SchedulerSpec into a config node."""
    build = instantiate(model_cfg, _partial_=True)
    extra = {}
    if task_cfg is not None and "task" in inspect.signature(build.func).parameters:
        extra["task"] = build_task(task_cfg)
    elif task_cfg is not None:
        log.warning(
            "%s takes no `task`: the task config (task.loss, task.metrics) is not used; the "
            "module logs what it defines itself",
            build.func.__name__,
        )
    return build(optimizer=optimizer, scheduler=scheduler, **extra)


def build_task(task_cfg: DictConfig) -> Any:
    """The Task of `task_cfg`; a loss or metric it cannot build (an experiment's
    task.loss.label_smoothing on a regression's MSELoss) is one message naming task.*."""
    try:
        return instantiate(task_cfg)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, ConfigError):
            raise cause from err
        raise ConfigError(
            f"the task ({task_cfg.get('kind')}: task.loss, task.metrics, ...) cannot be built: "
            f"{type(cause).__name__}: {cause}. An experiment or override may set task.* keys "
            "of another task: check them with python train.py <options> --cfg job."
        ) from err


def check_model_fits_data(module: L.LightningModule, datamodule: Any, data_name: str) -> None:
    """Before any training: the module's network takes the data's inputs and gives what its
    task needs (TaskModule.check_fits), when the data says what it holds (`spec`)."""
    spec = getattr(datamodule, "spec", None)
    check = getattr(module, "check_fits", None)
    if spec is not None and check is not None:
        check(spec, data_name or type(datamodule).__name__)


def check_optimizer_builds(module: L.LightningModule, choices: dict[str, str]) -> None:
    """Build the optimizer and scheduler once on the module's parameters before any work, so
    that a bad optimizer.* or scheduler.* value is one message naming the option and its
    settings, not an error in the middle of fit."""
    factory, spec = module.optimizer_factory, module.scheduler_spec
    try:
        optimizer = build_optimizer(module, factory, decay_groups_of(module))
        if spec is not None:  # built and stepped once: some schedulers read values only then
            scheduler = spec.lightning_config(optimizer, 1000)["scheduler"]  # any length
            if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                with warnings.catch_warnings():  # "step before optimizer.step()": on purpose
                    warnings.simplefilter("ignore")
                    scheduler.step()
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as err:
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


def callbacks_for_optimizer(factory: Any) -> list[Callback]:
    """What an optimizer needs the loop to do for it: a schedule-free one switches between
    its train and eval modes (trainlab.callbacks.schedule_free)."""
    if traits_of(factory).schedule_free:
        from trainlab.callbacks.schedule_free import ScheduleFreeModes

        return [ScheduleFreeModes()]
    return []


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
