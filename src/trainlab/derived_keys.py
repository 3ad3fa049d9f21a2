"""Keys the template sets from the knobs, and keys added with `+` that nothing would read.

`data.batch_size=32`, `trainer.max_epochs=3`, `optimizer.lr=0.01` look like settings, but the
run sets those keys itself from `batch_size`, `max_epochs`, `lr` (through the batch plan, the
lr scaling rule, the LR range test): a value given there is either ignored or trained with
while the plan, hparams, loggers and report say otherwise. Both are lies, so each such key
is refused before any work with the knob to use instead. So is a key added with `+` that no
object of the run takes as an argument (`+model.optimizer.lr=0.01`, `+foo=1`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig

from trainlab.checks import ConfigError

# (path, the interpolation it must keep, whether it must be there, what to give instead);
# `*` stands for any entry of a group such as callbacks
FOLLOW_KNOBS: tuple[tuple[str, str, bool, str], ...] = (
    (
        "data.batch_size",
        "${batch_size}",
        False,
        "batch_size=N (samples per optimizer step) or micro_batch_size=N (samples per "
        "device and forward); the run gives the datamodule the plan's micro batch",
    ),
    ("data.seed", "${split_seed}", False, "split_seed=N (the split alone) or seed=N (both)"),
    ("data.folds", "${cv.folds}", False, "cv.folds=K"),
    ("trainer.max_epochs", "${max_epochs}", True, "max_epochs=N (it also sizes the schedules)"),
    ("trainer.precision", "${precision}", True, "precision=..., e.g. precision=bf16-mixed"),
    ("trainer.deterministic", "${deterministic}", True, "deterministic=true"),
    ("trainer.gradient_clip_val", "${grad_clip}", True, "grad_clip=1.0"),
    ("trainer.default_root_dir", "${paths.output_dir}", True, "hydra.run.dir=<dir>"),
    (
        "optimizer.lr",
        "${lr}",
        True,
        "lr=... (the run sets the optimizer's lr from lr, scaled by lr_scaling or chosen by "
        "tune=lr, and records it)",
    ),
    ("optimizer.weight_decay", "${weight_decay}", False, "weight_decay=..."),
    ("scheduler.factory.max_lr", "${lr}", False, "lr=... (onecycle peaks at lr)"),
    ("scheduler.factory.warmup", "${warmup}", False, "warmup=..."),
    ("scheduler.factory.min_lr_ratio", "${min_lr_ratio}", False, "min_lr_ratio=..."),
    ("model.weight_decay_groups", "${weight_decay_groups}", False, "weight_decay_groups=..."),
    ("model.net.parametrization", "${parametrization}", False, "parametrization=sp|mup"),
    (
        "model.net.base_width",
        "${trainlab.base_width:*}",  # the model config's own width after the colon
        False,
        "base_width=N with parametrization=mup (null: the model config's own width)",
    ),
    (
        "callbacks.*.dirpath",
        "${paths.output_dir}/checkpoints",
        False,
        "hydra.run.dir=<dir> (checkpoints live in <run dir>/checkpoints, where resume= and "
        "the record find them)",
    ),
    (
        "callbacks.checkpoint_last.every_n_train_steps",
        "${checkpoint_every_n_steps}",
        False,
        "checkpoint_every_n_steps=N",
    ),
    ("callbacks.checkpoint_last.every_s", "${checkpoint_every_s}", False, "checkpoint_every_s=S"),
)

# keys the run passes in code: a value in the config would be overwritten without a word
SET_BY_THE_RUN: tuple[tuple[str, str], ...] = (
    (
        "trainer.accumulate_grad_batches",
        "batch_size and micro_batch_size: accumulation = batch_size / (micro_batch_size x "
        "devices), e.g. batch_size=256 micro_batch_size=64 accumulates 4 micro batches",
    ),
    ("trainer.callbacks", "callbacks=<option> or callbacks.<name>.<key>=..."),
    ("trainer.logger", "logger=<option>"),
    ("trainer.enable_checkpointing", "callbacks=none (no checkpoints)"),
    ("trainer.plugins", "nothing: the run installs its own checkpoint writer"),
    ("model.optimizer", "optimizer=<name> with lr=... and weight_decay=..."),
    ("model.scheduler", "scheduler=<name>"),
)

# groups whose entries are each instantiated on their own: a new entry brings a _target_
COLLECTIONS = ("callbacks", "logger")


def _node(cfg: DictConfig, path: str) -> tuple[bool, Any]:
    """(present, raw value) at a dotted path, interpolations left as written."""
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node._get_node(part)
    if isinstance(node, DictConfig):
        return True, node
    return True, node._value()


def _paths(cfg: DictConfig, pattern: str) -> Iterable[str]:
    """The paths a pattern with `*` stands for in this config."""
    head, star, tail = pattern.partition(".*.")
    if not star:
        yield pattern
        return
    present, group = _node(cfg, head)
    if present and isinstance(group, DictConfig):
        for key in group:
            yield f"{head}.{key}.{tail}"


def follows(raw: Any, expected: str) -> bool:
    """Whether a raw value is the expected interpolation; a `*` before the closing brace
    stands for any argument (`${trainlab.base_width:*}` takes `${trainlab.base_width:128}`)."""
    if expected.endswith(":*}"):
        pattern = re.escape(expected[:-2]) + r"[^}]+[}]"
        return isinstance(raw, str) and re.fullmatch(pattern, raw) is not None
    return raw == expected


def knob_of(expected: str) -> str:
    """The knob an interpolation reads: lr for ${lr}, base_width for ${trainlab.base_width:*}."""
    inside = re.search(r"[$][{]([^}]+)[}]", expected).group(1)
    return inside.removeprefix("trainlab.").split(":")[0]


def check_keys_follow_knobs(cfg: DictConfig) -> None:
    """Refuse a value where the run sets the key from a knob, or sets it in code."""
    for pattern, expected, required, advice in FOLLOW_KNOBS:
        for path in _paths(cfg, pattern):
            parent = path.rsplit(".", 1)[0]
            if not _node(cfg, parent)[0]:
                continue
            present, raw = _node(cfg, path)
            if not present and not required:
                continue
            if present and follows(raw, expected):
                continue
            given = f"{path}={raw}" if present else f"~{path} (removed)"
            raise ConfigError(
                f"{given} is not allowed: the run sets {path} from "
                f"{knob_of(expected)} "
                f"(it must stay {expected}), so this value would be ignored or trained with "
                f"while the plan, hparams and report say otherwise. Give {advice}."
            )
    for path, advice in SET_BY_THE_RUN:
        present, raw = _node(cfg, path)
        if present:
            raise ConfigError(
                f"{path}={raw} is not allowed: the run sets {path} itself, so this value would "
                f"be overwritten without effect. Give {advice}."
            )


def added_keys(task_overrides: Iterable[str], groups: Iterable[str]) -> list[str]:
    """The dotted keys a command line adds with `+key=value` or `++key=value` (config group
    selections such as `+experiment=x` and hydra's own keys left out)."""
    groups = set(groups)
    keys = []
    for override in task_overrides:
        if not override.startswith("+"):
            continue
        key = override.lstrip("+").split("=", 1)[0]
        if key.split("@", 1)[0] in groups or key.startswith("hydra.") or "/" in key:
            continue
        keys.append(key)
    return keys


def _accepts(target: str, name: str) -> bool | None:
    """Whether the callable `target` takes an argument `name` (None: cannot tell)."""
    try:
        names = argument_names(get_object(target))
    except (ImportError, ValueError, TypeError, AttributeError):
        return None
    return names is None or name in names


def argument_names(target: Any) -> list[str] | None:
    """The keyword arguments `target` takes (None: any). A class whose __init__ passes
    **kwargs on to its base (a subclass of Lightning's ModelCheckpoint, say) takes what the
    first base without **kwargs takes, too."""
    if not isinstance(target, type):
        params = inspect.signature(target).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.name not in ("self", "args")]
    names: list[str] = []
    for cls in target.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None or cls is object:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]  # without self
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return list(dict.fromkeys(names))
    return None


def check_added_keys_are_read(cfg: DictConfig, keys: Iterable[str]) -> None:
    """Each `+a.b.c=...` must land where something reads it: an argument of the object its
    parent node builds (`_target_`), or a new entry of callbacks/logger with a `_target_`."""
    for key in keys:
        parent, _, name = key.rpartition(".")
        present, node = _node(cfg, parent) if parent else (True, cfg)
        added = _node(cfg, key)[1]
        grandparent = parent.rpartition(".")[0]
        if (parent in COLLECTIONS and isinstance(added, DictConfig) and "_target_" in added) or (
            name == "_target_" and grandparent in COLLECTIONS
        ):
            continue  # a new callback or logger, built on its own
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if target is None:
            where = f"under {parent}" if parent else "at the top level"
            raise ConfigError(
                f"+{key} adds a key that nothing reads: no object built {where} takes "
                f"{name}. Check the spelling against `python train.py --cfg job`; the "
                "top-level knobs are listed by `python train.py --help`."
            )
        if _accepts(str(target), name) is False:
            takes = ", ".join(argument_names(get_object(str(target))) or ())
            raise ConfigError(
                f"+{key} adds an argument {name} that {target} does not take, so nothing "
                f"would read it. {parent} takes: {takes}."
            )


def keys_already_there(task_overrides: list[str], keys: list[str]) -> set[str]:
    """Which `++key=value` keys only set a key the config already has (Hydra's `++` adds or
    sets): the config is composed again without them, and looked at."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    hydra_cfg = HydraConfig.get()
    others = [o for o in task_overrides if not o.startswith("++")]
    if GlobalHydra.instance().is_initialized():  # inside the Hydra app
        base = compose(config_name=hydra_cfg.job.config_name, overrides=others)
    else:  # composed by hand (the tests): from the primary config directory
        primary = next(s.path for s in hydra_cfg.runtime.config_sources if s.provider == "main")
        with initialize_config_dir(config_dir=primary.removeprefix("file://"), version_base="1.3"):
            base = compose(config_name=hydra_cfg.job.config_name, overrides=others)
    return {key for key in keys if _node(base, key)[0]}


def check_derived_keys(
    cfg: DictConfig, task_overrides: Iterable[str], groups: Iterable[str]
) -> None:
    """Both checks of this module, on the composed config and the command line's overrides."""
    check_keys_follow_knobs(cfg)
    task_overrides = list(task_overrides)
    added = added_keys(task_overrides, groups)
    forced = [o.lstrip("+").split("=", 1)[0] for o in task_overrides if o.startswith("++")]
    if set(forced) & set(added):
        existing = keys_already_there(task_overrides, [k for k in added if k in forced])
        added = [k for k in added if k not in existing]
    check_added_keys_are_read(cfg, added)
