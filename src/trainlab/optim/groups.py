"""Parameter groups: which tensors get weight decay, and the optimizer built over them."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from trainlab.checks import ConfigError, check_weight_decay_groups
from trainlab.optim.mup import apply_multipliers, split_by_role
from trainlab.optim.registry import built_by, settings_of, traits_of
from trainlab.optim.roles import by_tensor

log = logging.getLogger(__name__)

NO_DECAY_MODULES = (nn.Embedding, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def split_for_weight_decay(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) parameters.

    Weight decay pulls weights towards 0. That regularizes matrices and convolution kernels,
    but on biases and normalization gains/shifts it only fights the scale they exist to learn,
    and on embeddings it shrinks rare tokens' rows hardest (nanoGPT and timm exclude all of
    them). So: every 1-D tensor, and every weight of an embedding or norm layer, is not decayed.
    """
    excluded = {
        id(p)
        for m in module.modules()
        if isinstance(m, NO_DECAY_MODULES)
        for p in m.parameters(recurse=False)
    }
    built = by_tensor(module)  # the shapes as built: under FSDP each tensor is a 1-D shard
    decay, no_decay = [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        (no_decay if built[id(p)][1] < 2 or id(p) in excluded else decay).append(p)
    return decay, no_decay


def build_optimizer(
    module: nn.Module,
    factory: Callable[..., Optimizer],
    weight_decay_groups: str = "auto",
    total_steps: int | None = None,
) -> Optimizer:
    """Call the optimizer partial on the module's parameters, split into named groups.

    `weight_decay_groups`: `split` always excludes biases, norm weights and embeddings from
    weight decay; `all` decays every parameter (torch's default); `auto` splits for the
    optimizers whose decay is decoupled (AdamW's kind: trainlab.optim.registry), the one meant
    to be used with a real weight_decay. Muon's groups are its hidden matrices and, for AdamW,
    the rest (`muon_groups`). Under μP each group is split further by role, with its own
    lr and weight decay (trainlab.optim.mup). `total_steps` (the run's optimizer steps) goes
    to a builder that asks for it (schedule-free's warmup).
    """
    check_weight_decay_groups(weight_decay_groups)
    traits = traits_of(factory)
    built = built_by(factory)
    decoupled = traits.decoupled_decay or (
        isinstance(built, type) and issubclass(built, torch.optim.AdamW)
    )
    split = weight_decay_groups == "split" or (weight_decay_groups == "auto" and decoupled)
    if total_steps is not None and "total_steps" in inspect.signature(built).parameters:
        factory = functools.partial(factory, total_steps=total_steps)
    if traits.family == "muon":
        groups = muon_groups(module, split)
    elif not split:
        groups = [p for p in module.parameters() if p.requires_grad]
    else:
        decay, no_decay = split_for_weight_decay(module)
        # the split shows once in the log, as the named param groups of the "optimizer:" line
        groups = [
            {"params": decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
        ]
    # μP at a width other than its base: each group split by role, lr and decay multiplied
    groups = split_by_role(groups, module, traits, settings_of(factory))
    return apply_multipliers(factory(groups))


_LOGGED: set[tuple[str, ...]] = set()


def log_split_once(module: nn.Module, muon_ids: set[int]) -> None:
    """Which tensors Muon takes, by name, once per process and split: the groups in the
    "optimizer:" line and metrics.json give only their sizes."""
    net = getattr(module, "net", module)
    names = [n for n, p in net.named_parameters() if id(p) in muon_ids]
    if tuple(names) not in _LOGGED:
        _LOGGED.add(tuple(names))
        matrices = "matrix" if len(names) == 1 else "matrices"
        log.info("muon: %d hidden %s (%s); adamw: the rest", len(names), matrices, ", ".join(names))


def muon_groups(module: nn.Module, split: bool) -> list[dict[str, Any]]:
    """Muon's group (`use_muon`: the 2-D hidden weight matrices, trainlab.optim.roles) and
    AdamW's (everything else: embeddings, the first and the output layer, biases, norms, conv
    kernels), the AdamW part split for weight decay when `split`. A network with no hidden
    matrix is refused: Muon would train nothing."""
    built = by_tensor(module)  # (role, ndim as built) per tensor: FSDP shards are 1-D
    roles = {key: role for key, (role, _ndim) in built.items()}
    params = [p for p in module.parameters() if p.requires_grad]
    hidden = [p for p in params if built[id(p)] == ("hidden", 2)]
    if not hidden:
        net = getattr(module, "net", module)
        shown = ", ".join(f"{n} ({roles[id(p)]})" for n, p in net.named_parameters() if p.ndim >= 2)
        raise ConfigError(
            f"optimizer=muon needs hidden weight matrices, and {type(net).__name__} has none: "
            f"its weights are {shown or 'none'}. Muon orthogonalizes only the "
            "matrices between the input and the output layer; give the network a hidden layer "
            "(model.net.hidden_sizes=[256,256]) or choose another optimizer (optimizer=adamw)."
        )
    taken = {id(p) for p in hidden}
    log_split_once(module, taken)
    rest = [p for p in params if id(p) not in taken]
    groups: list[dict[str, Any]] = [{"params": hidden, "use_muon": True, "name": "muon"}]
    if not split:
        return [*groups, {"params": rest, "name": "adamw"}]
    decayed = {id(p) for p in split_for_weight_decay(module)[0]}
    return [
        *groups,
        {"params": [p for p in rest if id(p) in decayed], "name": "adamw"},
        {
            "params": [p for p in rest if id(p) not in decayed],
            "weight_decay": 0.0,
            "name": "adamw_no_decay",
        },
    ]
