"""μP's per-group lr and weight decay: the optimizer half of trainlab.models.width.

Under `parametrization=mup` with width multiplier m = width / base_width, each parameter
group is split by role (trainlab.optim.roles: input, hidden, output, vector) and each part's
lr and weight decay multiplied by the rule of the optimizer's family (trainlab.optim.registry),
as the `mup` package does it (its MuAdam, MuSGD; the output layer's 1/m multiplier in the
forward pass, as its MuReadout):

    family                 hidden matrices          input, output, vectors (biases, norms)
    adam (Adam, AdamW, RMSprop, Adagrad, Lion's sign steps, ...)
                           lr / m, coupled wd x m   lr, wd unchanged
    sgd (SGD, LARS)        lr, wd unchanged         lr x m, coupled wd / m
    muon (hidden: Muon)    adjust_lr_fn=original: lr unchanged (its orthogonalized step already
                           has the spectral norm μP asks for); match_rms_adamw (an AdamW-sized
                           step): lr / m. Its AdamW part follows the adam row.

Decoupled weight decay (AdamW's kind) is left as configured, as the mup package leaves it.
The multipliers are applied to the groups after the optimizer is built (each group keeps
them as `lr_multiplier`, `weight_decay_multiplier`), so optimizer defaults such as
MuonWithAdamW's adamw_lr_ratio are kept, and a schedule, lr scaling and weight-decay groups
compose with them: a schedule multiplies each group's own lr. At m = 1 the groups are left
as they are: μP at its base width is the standard parametrization.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import Optimizer

from trainlab.models.width import parametrization_of
from trainlab.optim.registry import Traits
from trainlab.optim.roles import roles_by_tensor


def multipliers(role: str, traits: Traits, m: float, group: dict[str, Any], settings) -> tuple:
    """(lr multiplier, weight-decay multiplier) of a parameter of `role` in `group`."""
    if traits.family == "muon" and group.get("use_muon"):
        adjust = settings.get("adjust_lr_fn", "match_rms_adamw")
        return (1.0 if adjust in (None, "original") else 1.0 / m), 1.0
    if traits.family == "sgd":
        if role == "hidden":
            return 1.0, 1.0
        return m, (1.0 if traits.decoupled_decay else 1.0 / m)
    if role == "hidden":  # adam, sign, and Muon's AdamW part
        return 1.0 / m, (1.0 if traits.decoupled_decay else m)
    return 1.0, 1.0


def split_by_role(
    groups: list[Any], module: nn.Module, traits: Traits, settings: dict[str, Any]
) -> list[Any]:
    """The parameter groups split so that each part has one μP multiplier pair; unchanged
    unless the module's network is under mup at a width other than its base."""
    m = parametrization_of(module).multiplier
    if m == 1.0:
        return groups
    roles = roles_by_tensor(module)
    split: list[dict[str, Any]] = []
    for group in as_groups(groups):
        parts: dict[tuple[float, float], list[str]] = {}
        params: dict[tuple[float, float], list[nn.Parameter]] = {}
        for p in group["params"]:
            role = roles.get(id(p), "vector" if p.ndim < 2 else "input")
            key = multipliers(role, traits, m, group, settings)
            parts.setdefault(key, [])
            if role not in parts[key]:
                parts[key].append(role)
            params.setdefault(key, []).append(p)
        for key, part in params.items():
            name = "+".join(parts[key])
            if "name" in group:
                name = f"{group['name']}.{name}"
            split.append(
                {
                    **group,
                    "params": part,
                    "name": name,
                    "lr_multiplier": key[0],
                    "weight_decay_multiplier": key[1],
                }
            )
    return split


def as_groups(params: Any) -> list[Any]:
    """A list of parameters as one group; a list of groups as it is."""
    params = list(params)
    if params and not isinstance(params[0], dict):
        return [{"params": params}]
    return params


def apply_multipliers(optimizer: Optimizer) -> Optimizer:
    """Each group's lr and weight decay times its multipliers, after the optimizer set its
    defaults and before a scheduler records the initial lrs (called once, by build_optimizer;
    a resume then loads the groups as they were saved)."""
    for group in optimizer.param_groups:
        if "lr_multiplier" in group:
            group["lr"] = group["lr"] * group["lr_multiplier"]
            if "weight_decay" in group:
                group["weight_decay"] = group["weight_decay"] * group["weight_decay_multiplier"]
    return optimizer
