"""How far a pruned trial got, in words: the same words in summary.csv/.md and on the console.

A pruned job did not fail: the pruner stopped it because its intermediate value was no
better than the others' at the same point. Its record (metrics.json) has `status: pruned`,
no objective, and `pruned`: {epoch, step, value, metric}, where `epoch` is how many epochs
it completed, or, for a cross-validation job, `fold`: how many folds it completed. Its value
then is a partial result, never a final one: the report shows it beside the job, and never
ranks it with the completed jobs.
"""

from __future__ import annotations

import math
from typing import Any


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def value_then(pruned: dict[str, Any]) -> float | None:
    """The pruned metric's value when the pruner stopped the job (finite), or None."""
    value = pruned.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return float(value) if math.isfinite(value) else None


def reached(pruned: dict[str, Any]) -> str | None:
    """`epoch 4` (4 epochs completed), `2 folds` (a cross-validation job), or None."""
    epoch, fold = _count(pruned.get("epoch")), _count(pruned.get("fold"))
    if epoch is not None:
        return f"epoch {epoch}"
    if fold is not None:
        return f"{fold} fold{'' if fold == 1 else 's'}"
    return None


def describe(pruned: dict[str, Any]) -> str:
    """`pruned at epoch 4 (val/acc 0.91)`, `pruned after 2 folds (fold 2: val/acc 0.91)`:
    a cross-validation job is judged by its last fold's own value, not a mean."""
    where = reached(pruned)
    text = "pruned"
    if where is not None:
        text += f" {'at' if where.startswith('epoch') else 'after'} {where}"
    value = value_then(pruned)
    if value is not None:
        fold = _count(pruned.get("fold")) if _count(pruned.get("epoch")) is None else None
        then = f"fold {fold}: " if fold is not None else ""
        text += f" ({then}{pruned.get('metric') or 'value'} {value:.4g})"
    return text
