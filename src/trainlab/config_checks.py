"""Every check of a composed config that needs nothing built, run before any work.

`check_config(cfg)` is the first step of the pipeline (run.py): types, ranges, and knobs that
contradict each other, each refused with a ConfigError that names the knob and what is allowed.
`check_before_start(cfg)` runs it from train.py before torch and Lightning are imported:
nothing here imports them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainlab.batch_warmup import check_batch_size_warmup_knob, check_warmup_without_batch_tuning
from trainlab.checks import (
    ConfigError,
    check_choice,
    check_knobs,
    check_non_negative_number,
    check_optional,
    check_positive_number,
    check_schedule_knobs,
    check_text,
    check_weight_decay_groups,
    check_whole_number,
)
from trainlab.derived_keys import check_derived_keys
from trainlab.faults import describe
from trainlab.models.width import check_width_knobs
from trainlab.noise_knobs import check_noise_scale_knob
from trainlab.objective import check_monitors, objective_direction
from trainlab.optim.combinations import check_optimizer_combinations
from trainlab.plan import check_lr_scaling
from trainlab.record import group_choices, write_refusal

log = logging.getLogger(__name__)


def overrides_and_groups() -> tuple[list[str], list[str]]:
    """The command line's overrides of this job and the names of the config groups."""
    if not HydraConfig.initialized():
        return [], []
    hydra_cfg = HydraConfig.get()
    # unresolved: an override may hold an interpolation such as ${paths.output_dir}
    task = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
    return [str(o) for o in task], list(hydra_cfg.runtime.choices)


def check_before_start(cfg: DictConfig) -> None:
    """check_config on the composed config before torch and Lightning are imported (train.py),
    so that a typo costs a second, not five. A refused run leaves its `failed` record; a refused
    resume leaves the run's own record as it was."""
    try:
        check_config(cfg, *overrides_and_groups())
    except Exception as err:  # a bad value, or one that does not even resolve (${nope})
        if cfg.get("resume", None) is None:
            try:
                write_refusal(cfg, describe(err))
            except Exception as unrecorded:  # a value that does not even resolve, a full disk
                log.error("the refusal could not be recorded: %s", describe(unrecorded))
        if isinstance(err, OmegaConfBaseException):  # a value given that cannot be read
            raise ConfigError(describe(err)) from err
        raise


def check_config(
    cfg: DictConfig, task_overrides: Iterable[str] = (), groups: Iterable[str] = ()
) -> None:
    """Every check that needs nothing built: each knob's type and range, keys the run derives
    from the knobs, keys added that nothing reads, and knobs that contradict each other.
    `task_overrides` and `groups` are the command line's overrides and the config groups."""
    check_knobs(
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        max_epochs=cfg.max_epochs,
        seed=cfg.seed,
        folds=cfg.cv.folds,
    )
    check_whole_number("split_seed", cfg.split_seed, 0, "0", maximum=2**32 - 1)
    check_optional(check_whole_number, "micro_batch_size", cfg.micro_batch_size, 1, "32")
    check_whole_number("base_batch_size", cfg.base_batch_size, 1, "256")
    check_schedule_knobs(warmup=cfg.warmup, min_lr_ratio=cfg.min_lr_ratio)
    check_optional(check_positive_number, "grad_clip", cfg.grad_clip, "1.0")
    check_choice("compile", cfg.compile, (True, False), " (torch.compile the network or not)")
    check_choice("test", cfg.test, (True, False), " (evaluate the best checkpoint on test)")
    check_optional(
        check_choice, "predict", cfg.get("predict"), ("train", "val", "test"), " or null"
    )
    check_text("precision", cfg.precision, "bf16-mixed")
    check_text("optimized_metric", cfg.optimized_metric, "val/acc_best")
    check_text("task_name", cfg.task_name, "train")
    check_lr_scaling(cfg.lr_scaling, cfg.lr_scaling_exponent)
    check_weight_decay_groups(cfg.weight_decay_groups)
    check_width_knobs(cfg)
    check_noise_scale_knob(cfg)
    check_batch_size_warmup_knob(cfg.get("batch_size_warmup"))
    check_warmup_without_batch_tuning(cfg)
    check_optional(check_whole_number, "threads", cfg.threads, 1, "1", 1024)
    check_objective(cfg)
    check_derived_keys(cfg, task_overrides, groups)
    check_optimizer_combinations(cfg, group_choices())
    if cfg.get("tune") and cfg.tune.get("lr"):
        check_lr_settings(cfg.tune.lr)
    if cfg.cv.folds and "fold" not in cfg.data:
        raise ConfigError(
            f"cv.folds={cfg.cv.folds} needs a datamodule that can cut folds (data=digits); "
            f"this data config has no `fold` argument. Use cv.folds=0."
        )
    check_start(cfg)
    check_evaluation_only(cfg, task_overrides)
    check_trainer_limits(cfg)
    tunes = cfg.get("tune") and any(cfg.tune.get(k) for k in ("lr", "batch_size", "noise_scale"))
    if cfg.cv.folds and tunes:
        raise ConfigError(
            f"tune= with cv.folds={cfg.cv.folds} would tune each fold on its own data and train "
            "the folds at different lrs or micro batches, so cv/mean would mix them. Tune once "
            "(python train.py tune=lr), then cross-validate with what it found (lr=..., "
            "micro_batch_size=...)."
        )


# knobs that only shape training: with train=false (evaluate ckpt_path) nothing reads them
TRAINING_ONLY = (
    "optimizer",
    "scheduler",
    "lr",
    "weight_decay",
    "weight_decay_groups",
    "lr_scaling",
    "lr_scaling_exponent",
    "base_batch_size",
    "batch_size_warmup",
    "warmup",
    "min_lr_ratio",
    "grad_clip",
    "max_epochs",
    "tune",
    "checkpoint_every_n_steps",
    "checkpoint_every_s",
)


def check_evaluation_only(cfg: DictConfig, task_overrides: Iterable[str]) -> None:
    """train=false evaluates a checkpoint: a training knob given with it would be recorded as if
    it had made those weights."""
    if cfg.train is not False:
        return
    given = [o for o in task_overrides if o.lstrip("+~").split("=", 1)[0] in TRAINING_ONLY]
    if given:
        raise ConfigError(
            f"train=false evaluates ckpt_path={cfg.ckpt_path} as it was trained, so "
            f"{' '.join(given)} would change nothing and only be recorded as if it had. Leave "
            "the training knobs out (the record keeps the hparams of the run that saved the "
            "checkpoint), or train a new run from it with train=true ckpt_path=..."
        )


def check_trainer_limits(cfg: DictConfig) -> None:
    """Trainer limits that the run's own knobs would silently override."""
    trainer = cfg.trainer
    min_epochs, max_steps, min_steps = (
        trainer.get(k) for k in ("min_epochs", "max_steps", "min_steps")
    )
    if isinstance(min_epochs, int) and min_epochs > cfg.max_epochs:
        raise ConfigError(
            f"trainer.min_epochs={min_epochs} is more than max_epochs={cfg.max_epochs}: Lightning "
            f"would stop at max_epochs. Give max_epochs={min_epochs} (or more)."
        )
    if isinstance(min_steps, int) and isinstance(max_steps, int) and 0 < max_steps < min_steps:
        raise ConfigError(
            f"trainer.min_steps={min_steps} is more than trainer.max_steps={max_steps}: "
            f"training would stop at max_steps. Give trainer.max_steps={min_steps} (or more)."
        )
    if cfg.test and trainer.get("limit_test_batches") in (0, 0.0):
        raise ConfigError(
            "test=true with trainer.limit_test_batches=0 would test nothing and record no test "
            "metrics: use test=false to skip the test, or leave trainer.limit_test_batches out."
        )


def check_objective(cfg: DictConfig) -> None:
    """optimized_metric and optimized_direction agree with each other and with every callback
    that watches a metric; a test/ objective needs the test stage."""
    objective_direction(cfg.optimized_metric, cfg.optimized_direction)
    check_monitors(
        cfg.get("callbacks"), cfg.optimized_metric, cfg.optimized_direction, cfg.get("scheduler")
    )
    if str(cfg.optimized_metric).startswith("test/") and (not cfg.test or cfg.cv.folds):
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric} needs the test stage, but "
            f"test={cfg.test} and cv.folds={cfg.cv.folds} (cross-validation never looks at the "
            "test split): optimize a val/ metric, or set test=true without cv.folds."
        )
    no_validation = cfg.trainer.get("limit_val_batches")
    if str(cfg.optimized_metric).startswith("val/") and no_validation in (0, 0.0):
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric} comes from validation, but "
            f"trainer.limit_val_batches={no_validation} turns validation off: leave "
            "trainer.limit_val_batches at null (or > 0), or optimize a test/ metric."
        )


def check_start(cfg: DictConfig) -> None:
    """train / ckpt_path / resume: where the run starts from, and whether it trains at all."""
    check_choice("train", cfg.train, (True, False), " (false: only evaluate ckpt_path)")
    check_choice("deterministic", cfg.deterministic, (True, False, "warn"))
    check_whole_number("checkpoint_every_n_steps", cfg.checkpoint_every_n_steps, 0, "200")
    check_non_negative_number("checkpoint_every_s", cfg.checkpoint_every_s, "60")
    check_text("ckpt_path", cfg.ckpt_path, "<run dir>/checkpoints/last.ckpt", nullable=True)
    check_text("resume", cfg.resume, "<run dir>", nullable=True)
    if cfg.resume is not None and cfg.ckpt_path is not None:
        raise ConfigError(
            f"resume={cfg.resume} and ckpt_path={cfg.ckpt_path} both name a starting point: "
            "resume= continues a run in its own directory, ckpt_path= starts a new run (or, "
            "with train=false, evaluates). Give one."
        )
    if not cfg.train and cfg.ckpt_path is None:
        raise ConfigError(
            "train=false evaluates a checkpoint, but no ckpt_path was given: add "
            "ckpt_path=<run dir>/checkpoints/<file>.ckpt"
        )
    if cfg.cv.folds and (cfg.ckpt_path is not None or cfg.resume is not None or not cfg.train):
        raise ConfigError(
            f"cv.folds={cfg.cv.folds} trains K models from scratch; it cannot start from or "
            "evaluate a checkpoint (ckpt_path, resume, train=false). Use cv.folds=0."
        )


# what a range test that cannot be trusted does (tune.lr.on_failure)
ON_FAILURE = ("fallback", "refuse")


def check_lr_settings(settings: dict[str, Any]) -> None:
    """tune.lr's own knobs, before the test runs."""
    check_positive_number("tune.lr.min_lr", settings["min_lr"], "1e-6")
    check_positive_number("tune.lr.max_lr", settings["max_lr"], "1.0")
    if not settings["max_lr"] > settings["min_lr"]:
        raise ConfigError(
            f"tune.lr.max_lr={settings['max_lr']:g} must be above tune.lr.min_lr="
            f"{settings['min_lr']:g}: the range test raises the lr from min_lr to max_lr."
        )
    check_whole_number("tune.lr.num_training", settings["num_training"], 13, "100")
    check_choice("tune.lr.mode", settings["mode"], ("exponential", "linear"))
    if settings["early_stop_threshold"] is not None:
        check_positive_number("tune.lr.early_stop_threshold", settings["early_stop_threshold"], "4")
    check_non_negative_number("tune.lr.min_descent", settings.get("min_descent"), "0.1")
    check_choice(
        "tune.lr.on_failure",
        settings.get("on_failure"),
        ON_FAILURE,
        " (what a range test that cannot be trusted does)",
    )
