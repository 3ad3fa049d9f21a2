"""Parameter groups: which tensors get weight decay, and the optimizer built over them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer

from trainlab.checks import check_weight_decay_groups

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
    decay, no_decay = [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in excluded else decay).append(p)
    return decay, no_decay


def build_optimizer(
    module: nn.Module, factory: Callable[..., Optimizer], weight_decay_groups: str = "auto"
) -> Optimizer:
    """Call the optimizer partial on the module's parameters, split into decay groups.

    `weight_decay_groups`: `split` always excludes biases, norm weights and embeddings from
    weight decay; `all` decays every parameter (torch's default); `auto` splits for AdamW,
    whose decoupled decay is the one meant to be used with a real weight_decay.
    """
    check_weight_decay_groups(weight_decay_groups)
    optimizer_class = getattr(factory, "func", factory)
    split = weight_decay_groups == "split" or (
        weight_decay_groups == "auto" and issubclass(optimizer_class, torch.optim.AdamW)
    )
    if not split:
        return factory([p for p in module.parameters() if p.requires_grad])
    decay, no_decay = split_for_weight_decay(module)
    # the split shows once in the log, as the two param groups of the "optimizer:" line
    return factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
