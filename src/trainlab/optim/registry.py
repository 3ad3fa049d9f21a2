"""What the rest of the template must know about each optimizer class, in one table.

The optimizer itself is chosen in `conf/optimizer/` (a Hydra partial); this says how it
behaves where that matters to the template:
  - `decoupled_decay`: its weight decay is decoupled from the gradient (AdamW's kind), so
    `weight_decay_groups=auto` keeps it off biases, norms and embeddings;
  - `schedule_free`: it has train and eval modes (`optimizer.train()`/`.eval()`) and averages
    its own iterates, so it takes no decaying schedule;
  - `whole_tensors`: its update needs each parameter whole (a matrix's orthogonalization, a
    per-tensor trust ratio, a factored or Kronecker preconditioner): FSDP, which hands each
    rank a flat shard, would silently compute something else;
  - `family`: `adam` (per-coordinate normalized steps), `sgd`, `sign` (Lion) or `muon`: how
    an lr rule such as μP's must treat it;
  - `relative_step`: its step is sized by each weight's own norm (LAMB's and LARS's trust
    ratio, Adafactor's RMS(θ) scaling), which already shrinks with width: μP's lr rule for its
    family would count the width twice, so parametrization=mup refuses it.
Classes are keyed by their top-level package and class name, so a config's `_target_`
(`pytorch_optimizer.Lamb`) and the class it builds (`pytorch_optimizer.optimizer.lamb.Lamb`)
look up the same entry, before anything is imported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Traits:
    family: str = "adam"
    decoupled_decay: bool = False
    schedule_free: bool = False
    whole_tensors: bool = False
    relative_step: bool = False


ADAMW = Traits(decoupled_decay=True)
TRAITS: dict[tuple[str, str], Traits] = {
    ("torch", "SGD"): Traits(family="sgd"),
    ("torch", "Adam"): Traits(),
    ("torch", "AdamW"): ADAMW,
    ("torch", "NAdam"): Traits(),
    ("torch", "RAdam"): Traits(),
    ("torch", "RMSprop"): Traits(),
    ("torch", "Adagrad"): Traits(),
    ("torch", "Adafactor"): Traits(decoupled_decay=True, whole_tensors=True, relative_step=True),
    ("trainlab", "MuonWithAdamW"): Traits(family="muon", decoupled_decay=True, whole_tensors=True),
    ("trainlab", "adamw_schedulefree"): Traits(decoupled_decay=True, schedule_free=True),
    ("schedulefree", "AdamWScheduleFree"): Traits(decoupled_decay=True, schedule_free=True),
    ("schedulefree", "SGDScheduleFree"): Traits(family="sgd", schedule_free=True),
    ("pytorch_optimizer", "Lamb"): Traits(
        decoupled_decay=True, whole_tensors=True, relative_step=True
    ),
    ("pytorch_optimizer", "LARS"): Traits(family="sgd", whole_tensors=True, relative_step=True),
    ("pytorch_optimizer", "Lion"): Traits(family="sign", decoupled_decay=True),
    ("pytorch_optimizer", "SOAP"): Traits(decoupled_decay=True, whole_tensors=True),
    ("pytorch_optimizer", "ADOPT"): Traits(),
}


def key_of_target(target: str) -> tuple[str, str]:
    """("pytorch_optimizer", "Lamb") for "pytorch_optimizer.Lamb" or for the class's own
    "pytorch_optimizer.optimizer.lamb.Lamb"."""
    parts = str(target).split(".")
    return parts[0], parts[-1]


def traits_of_target(target: str) -> Traits:
    """The traits of a `_target_`; a class this table does not know gets the defaults (an
    Adam-type optimizer with coupled decay, fine with any strategy), except that everything
    from the `schedulefree` package is schedule-free."""
    key = key_of_target(target)
    if key in TRAITS:
        return TRAITS[key]
    return Traits(schedule_free=key[0] == "schedulefree")


def built_by(factory):
    """The class or function a (possibly nested) partial calls: Hydra's partial wrapped in
    another (a keyword added for one build) unwraps to the same optimizer."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def traits_of(factory) -> Traits:
    """The traits of an optimizer class, or of the partial (or function) that builds one."""
    built = built_by(factory)
    built = getattr(built, "builds", built)  # a builder function names the class it returns
    return traits_of_target(f"{built.__module__}.{built.__qualname__}")


def settings_of(factory) -> dict:
    """The optimizer's own arguments as configured (betas, momentum, adjust_lr_fn, warmup, ...),
    without `lr` and `weight_decay`, which the param groups show as they were built."""
    keywords: dict = {}
    while isinstance(factory, functools.partial):
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    return {k: v for k, v in keywords.items() if k not in ("lr", "weight_decay")}
