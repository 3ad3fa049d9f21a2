"""Shared fixtures: compose `conf/` the way `train.py` does, one thread, outputs in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# small models on 2 shared cores: torch's default threads collapse when anything else runs
torch.set_num_threads(1)
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("TRAINLAB_RUN_ID", "tests0")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_run(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python train.py <overrides>` would get, writing into `output_dir`."""
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

    def _compose(*overrides: str) -> DictConfig:
        return compose_run(list(overrides), tmp_path / f"run{next(counter)}")

    return _compose


def cli_env(project: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `train.py` subprocess: one thread, no HYDRA_FULL_ERROR; with
    `project`, that folder is the project root, so outputs/ lands there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    if project is not None:
        env["PROJECT_ROOT"] = str(project)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def run_cli(
    *args: str,
    cwd: Path = ROOT,
    timeout: float = 300,
    project: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`python train.py <args>` as a user types it (see `cli_env`)."""
    return subprocess.run(
        train_cmd(*args),
        cwd=cwd,
        env={**cli_env(project), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
