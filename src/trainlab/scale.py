"""Settings for large models: Lightning's FSDP strategy built from config, and torch.compile.

Only Lightning's own strategies are used; this module just turns config strings (class paths,
strategy names) into the objects their constructors want.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
from hydra.utils import get_class
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

log = logging.getLogger(__name__)


def fsdp_strategy(
    wrap_blocks: Sequence[str],
    sharding_strategy: str = "FULL_SHARD",
    cpu_offload: bool = False,
    activation_checkpointing: bool = False,
    state_dict_type: str = "full",
) -> FSDPStrategy:
    """FSDP that shards each block (e.g. `trainlab.models.gpt.Block`) as its own unit.

    `sharding_strategy`: FULL_SHARD (params, grads, optimizer state), SHARD_GRAD_OP (grads and
    optimizer state), NO_SHARD (DDP-like), HYBRID_SHARD (full within a node, replicated across).
    """
    blocks = {get_class(path) for path in wrap_blocks}
    return FSDPStrategy(
        auto_wrap_policy=blocks,
        activation_checkpointing_policy=blocks if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        cpu_offload=cpu_offload,
        state_dict_type=state_dict_type,
    )


def compiled(net: nn.Module) -> nn.Module:
    """`net` compiled in place (`nn.Module.compile`: state_dict keys stay as they are, so
    checkpoints load with or without compile), or unchanged with a warning where
    torch.compile cannot run."""
    if not torch._dynamo.is_dynamo_supported():
        warnings.warn(
            "compile=true: torch.compile is not supported here; training uncompiled", stacklevel=2
        )
        return net
    log.info("compile=true: compiling %s with torch.compile", type(net).__name__)
    net.compile()
    return net
