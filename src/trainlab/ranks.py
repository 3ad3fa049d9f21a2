"""Which process of a run this is, and what a rank adds to its command line before Hydra.

Three kinds of processes run train.py:

- the one the user started: rank 0 of a one-process run, or of a DDP run whose other ranks
  Lightning starts;
- ranks that Lightning's launcher started on this machine: their command line is rank 0's plus
  `hydra.run.dir=... hydra.job.name=train_ddp_process_<r> hydra.output_subdir=null`
  (Lightning's own command builder, or `distributed.child_command` inside a sweep);
- ranks started by torchrun or srun, with *the same command line on every node*: RANK (or
  SLURM_PROCID) says which one. For rank != 0 `rank_argv` adds `hydra.output_subdir=null`
  (only global rank 0 writes `.hydra/`) and `hydra.job.name=train_rank_<rank>` (its log goes
  to `train_rank_<rank>.log` beside rank 0's `train.log`), each unless the command sets it.

Nothing here imports torch, Lightning or Hydra: it runs before every start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

# what every command that Lightning's launcher (or distributed.child_command) builds contains
LIGHTNING_CHILD = "hydra.job.name=train_ddp_process_"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_other_rank(env: Mapping[str, str] = os.environ) -> bool:
    """DDP ranks > 0 (started by Lightning, torchrun or srun) write into rank 0's run
    directory and must not write Hydra's files, records or locks."""
    return any(env.get(key, "0") != "0" for key in RANK_VARIABLES)


def started_by_lightning(argv: Sequence[str]) -> bool:
    """A rank that Lightning's launcher started with rank 0's (already rewritten) command."""
    return any(arg.startswith(LIGHTNING_CHILD) for arg in argv)


def rank_name(env: Mapping[str, str] = os.environ) -> str:
    """The global rank as torchrun (RANK) or srun (SLURM_PROCID) numbers it; else the node
    and local rank of a Lightning launch started by hand on each node (NODE_RANK)."""
    for key in ("RANK", "SLURM_PROCID"):
        if env.get(key):
            return env[key]
    return f"node{env.get('NODE_RANK', '0')}_{env.get('LOCAL_RANK', '0')}"


def override_key(arg: str) -> str:
    """`hydra.job.name` for `hydra.job.name=x`, `++a.b=1` and `+a.b=1`; `-m` for `-m`."""
    return arg.split("=", 1)[0].lstrip("+~")


def rank_argv(argv: list[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """`argv` for this process: unchanged for rank 0 and for ranks Lightning started (their
    command already has these overrides); for another rank, with the overrides that keep it
    from writing rank 0's files, each only where the command does not give that key."""
    if not is_other_rank(env) or started_by_lightning(argv):
        return argv
    given = {override_key(arg) for arg in argv[1:]}
    extra = {
        "hydra.output_subdir": "hydra.output_subdir=null",
        "hydra.job.name": f"hydra.job.name=train_rank_{rank_name(env)}",
    }
    return [*argv, *(override for key, override in extra.items() if key not in given)]


def launched_as_several_processes(env: Mapping[str, str] = os.environ) -> bool:
    """torchrun started this process as one of several (on one node or more): each runs Hydra
    on its own, so a run dir named from the clock and a random id differs per process."""
    try:
        return "LOCAL_WORLD_SIZE" in env and int(env.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def launched_on_several_nodes(num_nodes: object, env: Mapping[str, str] = os.environ) -> bool:
    """A run whose processes live on more than one machine: `trainer.num_nodes` > 1, or
    torchrun's world larger than this node's share of it."""
    try:
        if int(num_nodes or 1) > 1:  # type: ignore[call-overload]
            return True
    except (TypeError, ValueError):
        pass  # a bad num_nodes is the Trainer's to refuse
    local = env.get("LOCAL_WORLD_SIZE")  # set by torchrun only
    try:
        return local is not None and int(env.get("WORLD_SIZE", local)) > int(local)
    except ValueError:
        return False
