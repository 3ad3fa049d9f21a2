"""Lightning's DDP inside a Hydra sweep (`python train.py -m trainer=ddp_cpu lr=1e-3,3e-3`).

Lightning starts ranks >= 1 of a single-machine DDP run by running the script again, with
the *whole* original command line plus `hydra.run.dir=...`. Under `-m` that command line is
the sweep itself, so every extra rank starts the whole sweep again: it writes stray job
directories and a second sweep report, and with the Optuna sweeper it trains *different*
sampled values than the rank it is supposed to help. The sweep also breaks after its first
DDP job, because Lightning leaves that job's process group and launch variables behind.

`distributed_job()` wraps one job of a sweep and fixes both from inside the application:

1. while the job runs, Lightning builds a rank's command from *this job's* overrides, so
   every rank trains the same point (`child_command`);
2. when the job ends, the process group is destroyed and the launch variables are put back,
   so the next job starts its ranks afresh (`reset_after_job`).

Outside a sweep it does nothing: Lightning's own command is right for a single run, and
processes started by torchrun or SLURM never reach the launcher's command builder.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

log = logging.getLogger(__name__)

# Where the Trainer's subprocess launcher finds the function that builds a rank's command.
# It imported the function *by name* from lightning.fabric, so the name must be replaced in
# this module: replacing it in fabric's module would change nothing for the Trainer.
LAUNCHER_MODULE = "lightning.pytorch.strategies.launchers.subprocess_script"
COMMAND_BUILDER = "_hydra_subprocess_cmd"

# What Lightning writes into the environment of the process that launches the ranks (the
# launcher, `_init_dist_connection`, `seed_everything`, `_set_num_threads_if_needed`). Left
# set after a job, LOCAL_RANK makes the next job believe an outside launcher started it: it
# spawns no rank and waits forever for a peer (or fails); a stale MASTER_PORT is taken.
LAUNCH_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "RANK",
    "OMP_NUM_THREADS",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
)


def in_sweep() -> bool:
    """True in a job of `python train.py -m ...` (one process runs many jobs in a row)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def script_command() -> list[str]:
    """How this process was started, without its arguments, as Lightning restarts it:
    `python -m <module>` when run as a module, else `python <absolute script path>`."""
    import __main__  # here, as Lightning does (lightning issue 15218)

    spec = getattr(__main__, "__spec__", None)
    if spec is None:
        return [sys.executable, os.path.abspath(sys.argv[0])]
    return [sys.executable, "-m", spec.name]


def child_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and working directory of rank `local_rank` of the current sweep job.

    A single run (not a sweep) of this job's overrides, written into this job's directory:
    the job's own overrides (`HydraConfig.overrides.task`: the sweep's values for this job,
    the Optuna trial's sampled ones) instead of the sweep's command line, and the job's
    output directory instead of `hydra.run.dir`, whose timestamp would name a new folder.
    The rest follows Lightning's convention for Hydra: the rank logs to
    `train_ddp_process_<rank>.log`, writes no `.hydra/` (rank 0 saved the config), and starts
    from the original working directory.
    """
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    command = script_command() + list(hydra_cfg.overrides.task)
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


@contextlib.contextmanager
def child_command_for_this_job() -> Iterator[None]:
    """Make Lightning's launcher call `child_command` while the block runs, then undo it."""
    launcher = importlib.import_module(LAUNCHER_MODULE)
    original = getattr(launcher, COMMAND_BUILDER)  # AttributeError: Lightning renamed it
    setattr(launcher, COMMAND_BUILDER, child_command)
    try:
        yield
    finally:
        setattr(launcher, COMMAND_BUILDER, original)


def launch_variables() -> dict[str, str | None]:
    """The current values of LAUNCH_VARIABLES (None: not set)."""
    return {name: os.environ.get(name) for name in LAUNCH_VARIABLES}


def reset_after_job(before: dict[str, str | None]) -> None:
    """Leave the process as the next job needs it: no process group, launch variables back.

    Lightning destroys its process group only at interpreter exit; the next job's Trainer
    would find it still initialized, skip creating its own and talk to ranks that are gone.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def log_if_spawned_rank() -> None:
    """In a rank that Lightning started for a job, say which overrides it trains with, so the
    rank's log (`train_ddp_process_<rank>.log`) shows it trained the same point as rank 0."""
    name = HydraConfig.get().job.name if HydraConfig.initialized() else ""
    if name.startswith("train_ddp_process_"):
        overrides = " ".join(HydraConfig.get().overrides.task)
        log.info("rank %s of a DDP job, overrides: %s", os.environ.get("LOCAL_RANK"), overrides)


@contextlib.contextmanager
def distributed_job() -> Iterator[None]:
    """Wrap one job (`train(cfg)`) so that DDP works inside a sweep; see the module docstring.

    In a single run only the spawned-rank log line is added; nothing else changes.
    """
    log_if_spawned_rank()
    if not in_sweep():
        yield
        return
    before = launch_variables()
    try:
        with child_command_for_this_job():
            yield
    finally:
        reset_after_job(before)
