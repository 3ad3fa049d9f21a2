"""Every option of every config group composes and instantiates on this CPU machine."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import group_options
from trainlab.building import build_module, check_model_fits_data
from trainlab.checks import ConfigError
from trainlab.data.sizing import check_sized_from_data
from trainlab.optim import SchedulerSpec, build_optimizer, decay_groups_of
from trainlab.run import build_trainer, instantiate_each

GROUPS = [
    "task",
    "hparams_search",
    "optimizer",
    "scheduler",
    "data",
    "model",
    "trainer",
    "callbacks",
    "logger",
    "debug",
    "experiment",
    "paths",
]
CASES = [(group, option) for group in GROUPS for option in group_options(group)]


def test_required_options_exist():
    required = {
        "optimizer": {
            "sgd",
            "sgd_momentum",
            "sgd_nesterov",
            "adam",
            "adamw",
            "rmsprop",
            "adagrad",
            "nadam",
            "radam",
            "adafactor",
        },
        "scheduler": {"none", "step", "multistep", "exponential", "cosine", "onecycle", "plateau"},
        "data": {"digits", "breast_cancer", "diabetes", "text"},
        "task": {"multiclass", "binary", "regression", "language_model"},
        "model": {"mlp", "cnn"},
        "trainer": {"default", "cpu", "gpu", "mps", "ddp", "ddp_cpu"},
        "callbacks": {
            "default",
            "checkpoint",
            "lr_monitor",
            "rich_progress_bar",
            "early_stopping",
            "none",
        },
        "logger": {"csv", "tensorboard", "mlflow", "wandb", "many", "none"},
        "debug": {"fdr", "overfit", "limit", "profiler"},
    }
    for group, options in required.items():
        assert options <= set(group_options(group)), group
    assert len(group_options("experiment")) >= 2


def test_every_option_file_says_what_it_is_for():
    from conftest import CONF

    for path in CONF.glob("*/*.yaml"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        comments = [line for line in lines[:3] if line.startswith("#") and "@package" not in line]
        assert comments, f"{path.relative_to(CONF)} has no comment line saying what it is for"


def composed_with_fitting_options(group: str, option: str, compose_in):
    """The option with a model and data that fit each other: a model is tried on each data
    set, a data set or task with each model (model=gpt needs token data, data=text needs it)."""
    partner = {"model": "data", "data": "model", "task": "data"}.get(group)
    tries = [[]] + [[f"{partner}={o}"] for o in group_options(partner)] if partner else [[]]
    if group == "task":  # a task and a data set of that kind, with a model that learns it
        tries = [
            [f"data={d}", f"model={m}"]
            for d in group_options("data")
            for m in group_options("model")
        ]
    refusals = []
    for extra in tries:
        cfg = compose_in(f"{group}={option}", *extra)
        try:
            check_sized_from_data(cfg, {})
            module = build_module(cfg.model, cfg.task, instantiate(cfg.optimizer), None)
            check_model_fits_data(module, instantiate(cfg.data), "data")
        except ConfigError as refused:
            refusals.append(f"{extra}: {refused}")
            continue
        return cfg
    pytest.fail(f"{group}={option} fits no shipped model/data: {refusals}")


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_instantiates(group, option, compose_in):
    cfg = composed_with_fitting_options(group, option, compose_in)
    # every interpolation resolves
    OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
    )

    datamodule = instantiate(cfg.data)
    module = build_module(
        cfg.model, cfg.task, instantiate(cfg.optimizer), instantiate(cfg.scheduler)
    )
    check_model_fits_data(module, datamodule, "data")
    # as configure_optimizers builds it: over the module's groups (Muon's need its roles)
    optimizer = build_optimizer(module, module.optimizer_factory, decay_groups_of(module))
    assert optimizer.param_groups[0]["lr"] == cfg.lr
    if module.scheduler_spec is not None:
        assert isinstance(module.scheduler_spec, SchedulerSpec)
        lightning_cfg = module.scheduler_spec.lightning_config(optimizer, total_intervals=100)
        assert lightning_cfg["interval"] in ("step", "epoch")

    callbacks = instantiate_each(cfg.callbacks)
    loggers = instantiate_each(cfg.logger)
    trainer_cfg = cfg.trainer
    if trainer_cfg.accelerator in ("gpu", "mps") and not (
        torch.cuda.is_available() or torch.backends.mps.is_available()
    ):
        # no such device here: build the same trainer on the CPU to check the rest of it
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"accelerator": "cpu", "devices": 1})
    if "fsdp" in str(trainer_cfg.get("strategy")) and not torch.cuda.is_available():
        # Lightning's FSDP needs CUDA: check the strategy builds, not a Trainer around it
        from lightning.pytorch.strategies import FSDPStrategy

        assert isinstance(instantiate(trainer_cfg.strategy), FSDPStrategy)
        return
    trainer = build_trainer(trainer_cfg, callbacks, loggers)
    assert trainer.max_epochs == cfg.max_epochs or trainer.fast_dev_run
    assert datamodule.batch_size == cfg.batch_size


def test_grad_clip_and_num_nodes_reach_the_trainer(compose_in):
    cfg = compose_in("grad_clip=0.5", "trainer.num_nodes=2")
    assert cfg.trainer.gradient_clip_val == 0.5 and cfg.trainer.num_nodes == 2
    assert compose_in().trainer.gradient_clip_val is None
