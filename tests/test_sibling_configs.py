"""Jobs that differ only in their values share one composition by Hydra
(trainlab.search.sibling_configs): every job's config is the very config Hydra composes for
it, flags, interpolations and Hydra's own records included, over a battery of sweeps."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import CONF
from trainlab.search.sibling_configs import SiblingConfigs


@pytest.fixture
def loader():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


class Counting:
    """Hydra's loader, counting the jobs it composed itself."""

    def __init__(self, loader) -> None:
        self.loader, self.composed = loader, []

    def load_sweep_config(self, master, overrides):
        self.composed.append(list(overrides))
        return self.loader.load_sweep_config(master, overrides)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def master_of(loader, hydra_overrides=()):
    return loader.load_configuration(
        config_name="train", overrides=list(hydra_overrides), run_mode=RunMode.MULTIRUN
    )


def same_config(ours, hydras) -> None:
    assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras)
    assert OmegaConf.is_struct(ours) and OmegaConf.is_struct(hydras)
    assert OmegaConf.is_readonly(ours.hydra) == OmegaConf.is_readonly(hydras.hydra)
    assert OmegaConf.to_container(ours, resolve=False) == OmegaConf.to_container(
        hydras, resolve=False
    )


GROUPS = ("optimizer", "experiment", "scheduler")
SWEEPS = {
    "grid of values": [
        ["lr=0.001", "batch_size=64"],
        ["lr=0.003", "batch_size=128"],
        ["lr=1e-2", "batch_size=32"],
    ],
    "groups and values": [
        ["optimizer=sgd", "lr=0.1"],
        ["optimizer=adam", "lr=0.01"],
        ["optimizer=sgd", "lr=0.3"],
        ["optimizer=adam", "lr=0.02"],
    ],
    "nested keys, null, lists, strings, interpolations": [
        ["trainer.max_epochs=3", "grad_clip=null", "task_name=a b", "seed=1"],
        ["trainer.max_epochs=5", "grad_clip=1.0", "task_name=x", "seed=2"],
        ["trainer.max_epochs=${max_epochs}", "grad_clip=0.5", "task_name='q'", "seed=3"],
    ],
    "an experiment and a scheduler": [
        ["experiment=digits_mlp_adamw_cosine", "lr=0.01", "warmup=0.1"],
        ["experiment=digits_mlp_adamw_cosine", "lr=0.03", "warmup=0.2"],
        ["scheduler=cosine", "lr=0.01", "warmup=0.1"],
        ["scheduler=cosine", "lr=0.02", "warmup=10"],
    ],
    "the same keys in another order, other keys": [
        ["lr=0.001", "seed=1"],
        ["seed=2", "lr=0.002"],
        ["batch_size=32"],
        [],
    ],
    "a value that changes a node's type, then one for the node as composed": [
        ["cv=null", "lr=0.1"],
        ["cv.folds=3", "lr=0.2"],
        ["trainer.max_epochs=[1, 2]"],
        ["trainer.max_epochs=4"],
    ],
}


@pytest.mark.parametrize("jobs", SWEEPS.values(), ids=SWEEPS.keys())
@pytest.mark.parametrize(
    "hydra_overrides",
    [(), ("hydra.job.config.override_dirname.exclude_keys=[seed]", "hydra.job.chdir=true")],
    ids=["plain", "hydra overrides"],
)
def test_every_job_gets_the_config_hydra_composes(loader, jobs, hydra_overrides):
    master = master_of(loader, hydra_overrides)
    counting = Counting(loader)
    siblings = SiblingConfigs(counting)
    for overrides in jobs * 2:  # each shape's first job by Hydra, the rest derived
        same_config(
            siblings.load_sweep_config(master, overrides),
            loader.load_sweep_config(master, overrides),
        )
    choices = {tuple(o for o in job if o.split("=")[0] in GROUPS) for job in jobs}
    assert len(counting.composed) == len(choices)  # one composition per set of group choices


@pytest.mark.parametrize(
    "overrides",
    [["+extra=1"], ["++lr=0.5"], ["~grad_clip"], ["hydra.job.chdir=true"], ["model.net={a: 1}"]],
)
def test_what_is_not_a_plain_value_setting_is_composed_by_hydra(loader, overrides):
    master = master_of(loader)
    counting = Counting(loader)
    siblings = SiblingConfigs(counting)
    for _ in range(2):
        try:
            expected = loader.load_sweep_config(master, overrides)
        except ConfigCompositionException:
            with pytest.raises(ConfigCompositionException):
                siblings.load_sweep_config(master, overrides)
            continue
        same_config(siblings.load_sweep_config(master, overrides), expected)
    assert len(counting.composed) == 2


@pytest.mark.parametrize(
    "bad", [["no_such_key=1"], ["lr=0.1", "cv.folds.x=2"], ["cv=null", "cv.folds=2"]]
)
def test_a_bad_value_is_refused_as_hydra_refuses_it(loader, bad):
    master = master_of(loader)
    siblings = SiblingConfigs(loader)
    siblings.load_sweep_config(master, ["lr=0.1", "cv=null"])  # composed, and a type changed
    with pytest.raises(ConfigCompositionException) as hydras:
        loader.load_sweep_config(master, bad)
    with pytest.raises(ConfigCompositionException) as ours:
        siblings.load_sweep_config(master, bad)
    assert str(ours.value) == str(hydras.value)


def test_a_derived_job_does_not_change_the_kept_one(loader):
    master = master_of(loader)
    siblings = SiblingConfigs(loader)
    first = siblings.load_sweep_config(master, ["lr=0.1"])
    first.lr = 9.0
    second = siblings.load_sweep_config(master, ["lr=0.2"])
    third = siblings.load_sweep_config(master, ["lr=0.1"])
    assert (second.lr, third.lr) == (0.2, 0.1)
    assert list(third.hydra.overrides.task) == ["lr=0.1"]
