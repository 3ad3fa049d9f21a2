"""One objective, declared once: `optimized_metric` and `optimized_direction` drive the rest.

The best checkpoint's monitor and mode, early stopping, the module's best-so-far metric,
the sweepers' direction and the report's ranking all follow from these two knobs, so they
cannot drift apart by hand:

    optimized_metric=val/loss_best          -> direction minimize (the name says loss)
                                            -> checkpoint monitor val/loss, mode min
                                            -> best-so-far val/loss_best, kept with min

The configs reach these functions through OmegaConf resolvers (`${trainlab.monitor:...}`,
`${trainlab.mode:...}`, `${trainlab.direction:...}`), registered by `register_resolvers()`
before Hydra composes anything. Nothing here imports torch: train.py imports it at start-up.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainlab.checks import ConfigError

DIRECTIONS = ("maximize", "minimize", "auto")
# a word of the metric's name that says smaller is better
MINIMIZE_WORDS = frozenset(
    {"loss", "mse", "rmse", "mae", "nll", "error", "err", "bpb", "perplexity", "ppl", "wer", "cer"}
)
MODE_OF = {"maximize": "max", "minimize": "min"}
BEST_SUFFIX = "_best"


# a word of the metric's name that says larger is better
MAXIMIZE_WORDS = frozenset(
    {"acc", "accuracy", "top1", "top5", "f1", "auc", "auroc", "ap", "map", "precision", "recall"}
    | {"iou", "miou", "dice", "r2", "bleu", "rouge", "ndcg", "mcc", "kappa"}
)


def implied_direction(metric: str) -> str | None:
    """`minimize` when a word of the name says smaller is better (val/loss, test/top1_error),
    `maximize` when one says larger is better (val/acc, val/f1, val/auroc), None when the name
    says neither (maximize is then only the default). A smaller-is-better word wins:
    val/top1_error is an error."""
    words = set(re.split(r"[^a-z0-9]+", str(metric).lower()))
    if MINIMIZE_WORDS & words:
        return "minimize"
    return "maximize" if MAXIMIZE_WORDS & words else None


def objective_direction(metric: Any, given: Any) -> str:
    """The objective's direction: `given`, or with `auto` the one the name implies (maximize
    when it implies none). An explicit direction against the name is refused."""
    if given not in DIRECTIONS:
        raise ConfigError(
            f"optimized_direction={given!r} is not allowed: use maximize (accuracy), minimize "
            "(a loss) or auto (minimize when the metric's name says loss, mse, error, bpb or "
            "perplexity, else maximize)."
        )
    implied = implied_direction(metric)
    if given == "auto":
        return implied or "maximize"
    if implied is not None and given != implied:
        raise ConfigError(
            f"optimized_metric={metric} with optimized_direction={given} contradicts itself: "
            f"the name says {'smaller' if implied == 'minimize' else 'larger'} is better "
            f"({implied}). Leave optimized_direction out (auto) or set "
            f"optimized_direction={implied}."
        )
    return given


def direction_or_default(cfg: Any) -> str:
    """The objective's direction; before check_config has refused a bad one, a stand-in."""
    try:
        return objective_direction(cfg.optimized_metric, cfg.optimized_direction)
    except (ConfigError, OmegaConfBaseException):
        return "minimize" if cfg.get("optimized_direction") == "minimize" else "maximize"


def monitor_of(metric: Any) -> str:
    """The per-epoch validation metric behind the objective: val/acc for val/acc_best and
    for test/acc (a checkpoint can only be chosen by what validation logs)."""
    stage, _, name = str(metric).partition("/")
    if name.endswith(BEST_SUFFIX):
        name = name[: -len(BEST_SUFFIX)]
    if stage in ("test", "val") and name:
        return f"val/{name}"
    return str(metric)


def best_of(metric: Any) -> str | None:
    """The name whose best-so-far the objective is: `acc` for val/acc_best, else None."""
    stage, _, name = str(metric).partition("/")
    if stage == "val" and name.endswith(BEST_SUFFIX):
        return name[: -len(BEST_SUFFIX)]
    return None


def monitor_mode(monitor: Any, metric: Any, given: Any) -> str:
    """`max` or `min` for a callback's `monitor`: the objective's direction when it watches
    the objective's metric, else the direction its own name implies (max when none)."""
    if str(monitor) in (str(metric), monitor_of(metric)):
        return MODE_OF[objective_direction(metric, given)]
    return MODE_OF[implied_direction(monitor) or "maximize"]


def watchers(callbacks: Any, scheduler: Any) -> list[tuple[str, Any, Any, str]]:
    """(where, monitor, mode, target) of everything that watches a metric: each callback with
    a monitor (ModelCheckpoint, EarlyStopping), and a scheduler that steps on one (plateau)."""
    found = []
    for key, node in (callbacks or {}).items():
        if hasattr(node, "get") and "monitor" in node:
            found.append((f"callbacks.{key}", node.get("monitor"), node.get("mode"), key))
    if hasattr(scheduler, "get") and scheduler.get("monitor") is not None:
        factory = scheduler.get("factory") or {}
        if "mode" in factory:
            found.append(("scheduler.factory", scheduler.monitor, factory.mode, "scheduler"))
    return found


def check_monitors(callbacks: Any, metric: Any, given: Any, scheduler: Any = None) -> None:
    """Everything that watches a metric (ModelCheckpoint, EarlyStopping, a plateau scheduler)
    agrees with the objective: a mode against the name or the objective, a best checkpoint
    chosen by another metric than the objective, or by none, is refused before training."""
    for where, monitor, mode, key in watchers(callbacks, scheduler):
        node = (callbacks or {}).get(key) if where.startswith("callbacks.") else None
        target = str(node.get("_target_", "")) if node is not None else ""
        if monitor is None:
            if target.endswith("ModelCheckpoint") and key == "checkpoint":
                raise ConfigError(
                    f"{where}.monitor=null would make the last epoch the 'best' checkpoint "
                    f"that is tested and recorded, while the objective is {metric}. Leave "
                    f"{where}.monitor out (it follows optimized_metric), or use callbacks=none "
                    "to test the final weights without checkpoints."
                )
            continue
        monitor = str(monitor)
        expected = monitor_mode(monitor, metric, given)
        if mode is not None and mode != expected:
            raise ConfigError(
                f"{where}.mode={mode} with monitor={monitor} acts on the worst values: here "
                f"{monitor} is better when {'smaller' if expected == 'min' else 'larger'}. "
                f"Leave {where}.mode out (it follows the monitor and optimized_metric) or set "
                f"{where}.mode={expected}."
            )
        if target.endswith("ModelCheckpoint") and monitor != monitor_of(metric):
            raise ConfigError(
                f"{where}.monitor={monitor} chooses the best checkpoint by another "
                f"metric than the objective optimized_metric={metric} (monitor "
                f"{monitor_of(metric)}): the test and the record would use weights the "
                f"objective did not pick. Leave {where}.monitor out, or make the "
                f"objective follow it: optimized_metric={monitor}{BEST_SUFFIX}."
            )


def best_of_first(metrics: Any) -> str:
    """A task's default objective: the best-so-far of its first metric (`[mse, mae, r2]` ->
    val/mse_best), or of the loss when it scores none."""
    names = list(metrics or [])
    return f"val/{names[0]}{BEST_SUFFIX}" if names else f"val/loss{BEST_SUFFIX}"


def register_resolvers() -> None:
    """`${trainlab.monitor:<metric>}`, `${trainlab.mode:<monitor>,<metric>,<direction>}`,
    `${trainlab.direction:<metric>,<direction>}`, `${trainlab.first_best:<metrics>}` for the
    configs (idempotent)."""
    for name, fn in (
        ("trainlab.monitor", monitor_of),
        ("trainlab.mode", monitor_mode),
        ("trainlab.direction", objective_direction),
        ("trainlab.first_best", best_of_first),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
