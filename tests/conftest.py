"""Shared fixtures: compose `conf/` the way `train.py` does, one thread, outputs in tmp dirs."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from trainlab.config_checks import TRAINING_ONLY

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# small models on 2 shared cores: torch's default threads collapse when anything else runs
torch.set_num_threads(1)
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("TRAINLAB_RUN_ID", "tests0")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# --- the baseline the suite was written against ------------------------------------------
#
# A fork changes conf/train.yaml's defaults (optimizer: sgd, model: cnn, max_epochs: 3, ...);
# the tests were written for these values, so every run the helpers build (compose_run,
# compose_in, train_cmd, run_cli) gets them unless the test gives that key itself. An override
# is only added where conf/ on disk differs from it (`drifted`): in this repository, whose
# defaults are the baseline but for checkpoint_every_n_steps (the tests were written with
# 200; conf/ ships 0, last.ckpt by time alone), the command lines are what the tests wrote
# plus that pin. Not pinned:
# - a key that a selected `@package _global_` option sets (experiment=, debug=,
#   hparams_search=, ...), including its `override /group:` and its sweeper's params: a
#   command-line override would beat the experiment's choice;
# - anything with resume=<run dir> (the run's saved config is what it continues; the resume
#   command may only change max_epochs), and the training knobs with train=false (refused).
# A test of the shipped defaults themselves passes baseline=False and reads `shipped(key)`.
BASELINE: tuple[str, ...] = (
    "data=digits",
    "model=mlp",
    "optimizer=adam",
    "scheduler=none",
    "trainer=default",
    "callbacks=default",
    "logger=csv",
    "tune=none",
    "task_name=train",
    "lr=0.001",
    "weight_decay=0.0",
    "weight_decay_groups=auto",
    "batch_size=64",
    "micro_batch_size=null",
    "lr_scaling=none",
    "lr_scaling_exponent=null",
    "base_batch_size=64",
    "parametrization=sp",
    "base_width=null",
    "noise_scale=false",
    "batch_size_warmup=null",
    "max_epochs=20",
    "warmup=0.05",
    "min_lr_ratio=0.0",
    "seed=42",
    "precision=32-true",
    "grad_clip=null",
    "compile=false",
    "optimized_metric=val/acc_best",
    "optimized_direction=auto",
    "test=true",
    "train=true",
    "checkpoint_every_n_steps=200",
    "deterministic=false",
    "threads=null",
    "cv.folds=0",
)
BASELINE_VALUES: dict[str, Any] = {
    o.split("=", 1)[0]: yaml.safe_load(o.split("=", 1)[1]) for o in BASELINE
}
# a pin that follows another choice: a test that picks its own data (or task) gets that
# data's objective (conf/task/), not digits' val/acc_best
FOLLOWS = {"optimized_metric": ("data", "task")}
HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i"}
SWEEPER_PARAMS = "hydra.sweeper.params."


def override_key(arg: str) -> str:
    """`a.b` for `a.b=1`, `+a.b=1`, `++a.b=1` and `~a.b`."""
    return arg.split("=", 1)[0].lstrip("+~")


@functools.cache
def _shipped_config() -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def shipped(key: str) -> Any:
    """What conf/ on disk gives `key` with no overrides: a group's option (`shipped("data")`)
    or a knob's value (`shipped("lr")`). For tests of the defaults themselves."""
    cfg = _shipped_config()
    choices = cfg.hydra.runtime.choices
    if key in choices:
        return choices[key]
    return OmegaConf.select(cfg, key)


_ABSENT = object()


def drifted(key: str) -> bool:
    """conf/ on disk no longer gives `key` its BASELINE value (a fork changed it); a key
    that conf/ no longer has at all cannot be pinned (Hydra would refuse the override)."""
    cfg = _shipped_config()
    if (
        key not in cfg.hydra.runtime.choices
        and OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT
    ):
        return False
    return shipped(key) != BASELINE_VALUES[key]


def _flat_keys(node: Any, prefix: str = "") -> set[str]:
    """The dotted keys of the leaves of a config node (`trainer.limit_train_batches`)."""
    if not isinstance(node, dict) or not node:
        return {prefix[:-1]} if prefix else set()
    keys: set[str] = set()
    for key, value in node.items():
        keys |= _flat_keys(value, f"{prefix}{key}.")
    return keys


@functools.cache
def _set_by_option(group: str, option: str) -> tuple[frozenset[str], frozenset[str]]:
    """(groups, keys) that conf/<group>/<option>.yaml sets when it is `@package _global_`:
    its `override /group:` entries (and what those options set) and its dotted keys."""
    path = CONF / group / f"{option}.yaml"
    if not path.is_file() or "@package _global_" not in path.read_text():
        return frozenset(), frozenset()
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    groups: set[str] = set()
    for entry in content.pop("defaults", None) or []:
        if not isinstance(entry, dict):
            continue
        for name, choice in entry.items():
            name = name.removeprefix("override").strip().lstrip("/")
            groups.add(name)
            if isinstance(choice, str):
                more_groups, more_keys = _set_by_option(name, choice)
                groups |= more_groups
                content.update(dict.fromkeys(more_keys))
    return frozenset(groups), frozenset(_flat_keys(content))


def _options_named(group: str, value: str) -> list[str]:
    """The options of `group` that an override's value names: `a`, `a,b`, `choice(a,b)`."""
    names = re.findall(r"[\w.-]+", value)
    if value.startswith("glob("):
        names = [p.stem for p in (CONF / group).glob("*.yaml")]
    return [n for n in names if (CONF / group / f"{n}.yaml").is_file()]


def _covers(keys: Iterable[str], key: str) -> bool:
    """One of `keys` is `key`, a node above it or below it (`cv` covers `cv.folds`)."""
    return any(k == key or key.startswith(k + ".") or k.startswith(key + ".") for k in keys)


def baseline_for(args: Sequence[str]) -> list[str]:
    """The BASELINE overrides that `python train.py <args>` needs on top of `args` to run
    what the suite was written against, whatever conf/train.yaml's defaults now are."""
    if HELP_FLAGS & set(args):
        return []
    overrides = [a for a in args if not a.startswith("-")]
    given = {override_key(a): a.split("=", 1)[1] if "=" in a else None for a in overrides}
    if given.get("resume") not in (None, "null"):
        return []
    groups: set[str] = set()
    keys = set(given)
    for key, value in given.items():
        if key.startswith(SWEEPER_PARAMS):
            keys.add(key.removeprefix(SWEEPER_PARAMS))
        for option in _options_named(key, value or "") if "." not in key else ():
            more_groups, more_keys = _set_by_option(key, option)
            groups |= more_groups
            keys |= more_keys
    keys |= {k.removeprefix(SWEEPER_PARAMS) for k in list(keys) if k.startswith(SWEEPER_PARAMS)}
    skip = set(TRAINING_ONLY) if given.get("train") == "false" else set()
    choices = _shipped_config().hydra.runtime.choices
    pins = []
    for pin in BASELINE:
        key = override_key(pin)
        # a group is taken by its own override or a config's `override /group:`, not by a
        # key inside it (data.fold=1 still wants data=digits); a knob by any key at or under it
        taken = key in groups or key in keys if key in choices else _covers(keys, key)
        taken = taken or any(k in groups or k in keys for k in FOLLOWS.get(key, ()))
        if key in skip or taken or not drifted(key):
            continue
        pins.append(pin)
    return pins


def with_baseline(args: Sequence[str]) -> list[str]:
    """`args` with `baseline_for(args)` after its last override: argparse takes the overrides
    as one run of positional arguments, and the test's own come first in what the run records
    (overrides.yaml, a sweep's job lines)."""
    args = list(args)
    pins = baseline_for(args)
    if not pins:
        return args
    given = [i for i, a in enumerate(args) if not a.startswith("-") and "=" in a]
    at = given[-1] + 1 if given else len(args)
    return [*args[:at], *pins, *args[at:]]


def compose_run(overrides: list[str], output_dir: Path, baseline: bool = True) -> DictConfig:
    """The config `python train.py <overrides>` would get, writing into `output_dir`; with
    `baseline`, on top of BASELINE (see `baseline_for`)."""
    if baseline:
        overrides = with_baseline(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def compose_in(tmp_path):
    """compose_in(*overrides) -> config of a run whose directory is a fresh tmp dir."""
    counter = iter(range(1000))

    def _compose(*overrides: str, baseline: bool = True) -> DictConfig:
        return compose_run(list(overrides), tmp_path / f"run{next(counter)}", baseline)

    return _compose


def cli_env(project: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `train.py` subprocess: one thread, no HYDRA_FULL_ERROR; with
    `project`, that folder is the project root, so outputs/ lands there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **with_pythonpath(extra)}
    if project is not None:
        env["PROJECT_ROOT"] = str(project)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def with_pythonpath(env: dict[str, str]) -> dict[str, str]:
    """`env` whose PYTHONPATH (tests/ for the helpers a run imports) comes before this
    process's own, instead of replacing it: a checkout tested with PYTHONPATH=src keeps
    its own source in the subprocess too."""
    inherited = os.environ.get("PYTHONPATH")
    if "PYTHONPATH" not in env or not inherited or env["PYTHONPATH"] == inherited:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([env["PYTHONPATH"], inherited])}


def train_cmd(*args: str, baseline: bool = True) -> list[str]:
    """`python train.py <args>`; with `baseline`, on top of BASELINE (see `baseline_for`)."""
    return [sys.executable, str(ROOT / "train.py"), *(with_baseline(args) if baseline else args)]


def run_cli(
    *args: str,
    cwd: Path = ROOT,
    timeout: float = 300,
    project: Path | None = None,
    env: dict[str, str] | None = None,
    baseline: bool = True,
) -> subprocess.CompletedProcess:
    """`python train.py <args>` as a user types it (see `cli_env`), on top of BASELINE unless
    `baseline=False` (see `baseline_for`)."""
    return subprocess.run(
        train_cmd(*args, baseline=baseline),
        cwd=cwd,
        env={**cli_env(project), **with_pythonpath(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
