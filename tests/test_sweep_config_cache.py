"""A basic sweep composes each job's config once (trainlab.search.config_cache): the check
before the batch and the launch share one composition, which a job in a process of its own
takes with it."""

from __future__ import annotations

import pickle

from omegaconf import OmegaConf

from conftest import run_cli
from quick import QUICK
from trainlab.search.config_cache import ComposedOnce, composing_once, job_context


class CountingLoader:
    """A stand-in for Hydra's config loader that counts its compositions."""

    def __init__(self) -> None:
        self.composed: list[tuple[str, ...]] = []

    def load_sweep_config(self, master_config, overrides):
        self.composed.append(tuple(overrides))
        return OmegaConf.create({"overrides": list(overrides), "hydra": {"job": {"num": 0}}})

    def other_method(self) -> str:
        return "passed through"


def test_the_check_and_the_launch_share_one_composition():
    loader = ComposedOnce(CountingLoader())
    master = OmegaConf.create({})
    checked = loader.load_sweep_config(master, ["lr=0.1"])
    checked.hydra.job.num = 7  # the caller changes its copy: the kept one is untouched
    launched = loader.load_sweep_config(master, ["lr=0.1"])
    assert launched.hydra.job.num == 0 and launched.overrides == ["lr=0.1"]
    assert loader._loader.composed == [("lr=0.1",)]
    loader.load_sweep_config(master, ["lr=0.1"])  # a third ask (a dead job's dir): composed
    assert loader._loader.composed == [("lr=0.1",), ("lr=0.1",)]
    assert loader.other_method() == "passed through"


def test_a_job_in_its_own_process_takes_only_its_own_composition():
    class Context:  # HydraContext's two fields
        def __init__(self, config_loader, callbacks=None) -> None:
            self.config_loader, self.callbacks = config_loader, callbacks

    counting = CountingLoader()
    context = composing_once(Context(counting))
    master = OmegaConf.create({})
    for job in (["lr=0.1"], ["lr=0.2"]):
        context.config_loader.load_sweep_config(master, job)  # the sweeper's check
    assert pickle.loads(pickle.dumps(context.config_loader))._kept == {}  # not all to each

    own = pickle.loads(pickle.dumps(job_context(context, ["lr=0.2"]).config_loader))
    assert list(own._kept) == [("lr=0.2",)]
    assert own.load_sweep_config(master, ["lr=0.2"]).overrides == ["lr=0.2"]
    assert len(own._loader.composed) == 2  # the job's process composed nothing itself
    assert list(context.config_loader._kept) == [("lr=0.1",)]  # handed over, not kept


def test_a_grid_sweep_runs_the_configs_it_checked(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "lr=1e-3,3e-3", "batch_size=32,64", *QUICK, "logger=none", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "UserWarning" not in result.stderr  # no schema-matching warning for the sweeper
    ran = {
        (cfg.lr, cfg.batch_size)
        for cfg in (OmegaConf.load(sweep / str(n) / ".hydra" / "config.yaml") for n in range(4))
    }
    assert ran == {(1e-3, 32), (1e-3, 64), (3e-3, 32), (3e-3, 64)}
    nums = [
        OmegaConf.load(sweep / str(n) / ".hydra" / "hydra.yaml").hydra.job.num for n in range(4)
    ]
    assert nums == [0, 1, 2, 3]
