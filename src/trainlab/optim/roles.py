"""Which part of the network each parameter is: `input`, `hidden`, `output` or `vector`.

Muon orthogonalizes only hidden weight matrices, and μP scales input, hidden and output
layers differently, so both ask the same question; this is the one place that answers it.

A network can answer it itself with a method `parameter_roles() -> {parameter name: role}`.
Otherwise the layers holding a weight of two or more dimensions are taken in registration
order (the order nn.Sequential and most networks build them in):
  - embeddings, and the first such layer of a network without embeddings, read the input;
  - the last such layer writes the output (a head tied to an embedding shares its tensor,
    which is then `output`);
  - the weights of the Linear and Conv layers between them are `hidden`, and so is the input
    projection of an nn.MultiheadAttention (`in_proj_weight`, a raw parameter);
  - any other tensor of two or more dimensions (a raw `nn.Parameter` such as a position
    table) counts as `input`: never orthogonalized, never width-scaled as hidden;
  - every 1-D tensor (biases, norm gains and shifts) is a `vector`.
"""

from __future__ import annotations

from torch import nn

ROLES = ("input", "hidden", "output", "vector")
HIDDEN_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def parameter_roles(net: nn.Module) -> dict[str, str]:
    """{name in net.named_parameters(): role} for every trainable parameter of `net`."""
    names = {id(p): name for name, p in net.named_parameters() if p.requires_grad}
    declared = getattr(net, "parameter_roles", None)
    if callable(declared):
        every = {name for name, _ in net.named_parameters()}  # frozen ones may be declared too
        return _checked(net, declared(), set(names.values()), every)
    layers = [
        m
        for m in net.modules()
        if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.ndim >= 2
    ]
    has_embedding = any(isinstance(m, nn.Embedding) for m in layers)
    roles: dict[int, str] = {}
    for index, layer in enumerate(layers):
        key = id(layer.weight)
        if isinstance(layer, nn.Embedding) or (index == 0 and not has_embedding):
            roles.setdefault(key, "input")
        elif isinstance(layer, HIDDEN_LAYERS) and index < len(layers) - 1:
            roles.setdefault(key, "hidden")
    if layers:
        roles[id(layers[-1].weight)] = "output"
    for m in net.modules():
        projection = getattr(m, "in_proj_weight", None)
        if isinstance(m, nn.MultiheadAttention) and isinstance(projection, nn.Parameter):
            roles.setdefault(id(projection), "hidden")
    result = {}
    for name, p in net.named_parameters():
        if p.requires_grad:
            result[name] = "vector" if p.ndim < 2 else roles.get(id(p), "input")
    return result


def _checked(
    net: nn.Module, roles: dict[str, str], names: set[str], every: set[str]
) -> dict[str, str]:
    wrong = {n: r for n, r in roles.items() if r not in ROLES}
    missing = sorted(names - set(roles))
    unknown = sorted(set(roles) - every)
    if wrong or missing or unknown:
        raise ValueError(
            f"{type(net).__name__}.parameter_roles() must give each trainable parameter one of "
            f"{ROLES}: "
            + "; ".join(
                part
                for part in (
                    f"roles not allowed {wrong}" if wrong else "",
                    f"missing {missing}" if missing else "",
                    f"not parameters of the network {unknown}" if unknown else "",
                )
                if part
            )
        )
    return {n: roles[n] for n in names}


# what FSDP (its flat-parameter wrapper), activation checkpointing and torch.compile insert
# into parameter names; the names without them are the network's own
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
LAYOUT = "_parameter_layout"


def unwrapped_name(name: str) -> str:
    for segment in WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def remember_layout(module: nn.Module) -> None:
    """Record each parameter's role and dimensions while the module is as built (called from
    `setup`, before a strategy wraps it): FSDP hands each rank flat 1-D shards, from which
    neither a matrix nor the layer it belongs to can be told."""
    if not any(name != unwrapped_name(name) for name, _ in module.named_parameters()):
        setattr(module, LAYOUT, _layout(module))


def parameter_layout(module: nn.Module) -> dict[str, tuple[str, int]]:
    """{unwrapped name: (role, ndim as built)} for every trainable parameter of a
    LightningModule (its `net`, when it has one) or a network: the one `remember_layout`
    recorded, else read now."""
    return getattr(module, LAYOUT, None) or _layout(module)


def _layout(module: nn.Module) -> dict[str, tuple[str, int]]:
    net = getattr(module, "net", None)
    prefix = "net." if isinstance(net, nn.Module) else ""
    # names as the network has them: compile's `_orig_mod.` (and FSDP's wrappers) left out
    by_name = {unwrapped_name(n): r for n, r in parameter_roles(net if prefix else module).items()}
    layout = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            name = unwrapped_name(name)
            own = by_name.get(name.removeprefix(prefix)) if name.startswith(prefix) else None
            # a parameter of the module outside its `net` is classified by its shape alone
            layout[name] = (own or ("vector" if p.ndim < 2 else "input"), p.ndim)
    return layout


def by_tensor(module: nn.Module) -> dict[int, tuple[str, int]]:
    """{id(parameter): (role, ndim as built)} for the module's parameters as they are now."""
    layout = parameter_layout(module)
    return {
        id(p): layout[unwrapped_name(name)]
        for name, p in module.named_parameters()
        if p.requires_grad
    }


def roles_by_tensor(module: nn.Module) -> dict[int, str]:
    """{id(parameter): role} for a LightningModule (its `net`, when it has one) or a network,
    wrapped by FSDP or not."""
    return {key: role for key, (role, _ndim) in by_tensor(module).items()}
