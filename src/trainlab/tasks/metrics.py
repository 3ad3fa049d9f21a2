"""Validation and test metrics by name, from torchmetrics: `metrics: [acc, f1, auroc]` in a
task's config becomes one `MetricCollection` per split.

Every metric is built with `validate_args=False`: its input checks read values back from the
device, a wait per step that costs a small model more than its step. The metrics update on
the device each step and are computed once per epoch (summed over ranks by torchmetrics).
The training split is scored by running means instead (EpochSums), cheaper still.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    AUROC,
    Accuracy,
    AveragePrecision,
    F1Score,
    Precision,
    Recall,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from trainlab.checks import ConfigError

Builder = Callable[[str, int | None], object]


def _classification(metric) -> Builder:
    def build(kind: str, num_classes: int | None):
        extra = {"num_classes": num_classes, "average": "macro"} if kind == "multiclass" else {}
        if metric is Accuracy and kind == "multiclass":
            extra["average"] = "micro"  # the share of samples right, as the train/acc mean
        return metric(task=kind, validate_args=False, **extra)

    return build


CLASSIFICATION: dict[str, Builder] = {
    "acc": _classification(Accuracy),
    "f1": _classification(F1Score),  # macro over classes for multi-class
    "precision": _classification(Precision),
    "recall": _classification(Recall),
    "auroc": _classification(AUROC),
    "ap": _classification(AveragePrecision),  # area under the precision-recall curve
}
REGRESSION: dict[str, Builder] = {
    "mse": lambda kind, k: MeanSquaredError(),
    "rmse": lambda kind, k: MeanSquaredError(squared=False),
    "mae": lambda kind, k: MeanAbsoluteError(),
    "r2": lambda kind, k: R2Score(),
}
AVAILABLE = {"multiclass": CLASSIFICATION, "binary": CLASSIFICATION, "regression": REGRESSION}


def build_scores(kind: str, names: Sequence[str], num_classes: int | None) -> MetricCollection:
    """The collection of `names` for a task of `kind`; an unknown name is one message."""
    known = AVAILABLE.get(kind, {})
    unknown = [n for n in names if n not in known]
    if unknown or len(set(names)) != len(names):
        allowed = ", ".join(known) or "none (this task logs its own)"
        raise ConfigError(
            f"task.metrics={list(names)}: {', '.join(unknown) or 'a name twice'} is not a "
            f"metric of a {kind} task; use names among: {allowed}"
        )
    if kind == "multiclass" and not num_classes:
        raise ConfigError("task.num_classes is needed for multi-class metrics")
    return MetricCollection({name: known[name](kind, num_classes) for name in names})
