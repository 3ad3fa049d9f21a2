"""Metric names in words, so that a plot or a table speaks the task's language.

A name is read from its parts, whatever the task logged: stage prefixes (`train/`, `val/`,
`test/`, `cv/`, `fold<k>/`), then the metric, whose `_`-separated words are spelled out
(`acc` -> accuracy, `mse` -> mean squared error, ...), with a `_best` suffix read as "best":

    val/auroc_best    -> best validation AUROC
    fold1/val/mse     -> fold 1 validation mean squared error
    val/unigram_bpb   -> validation unigram bits per byte

A metric none of whose words is known keeps its own name (`val/foo` -> validation foo).
Which way is better comes from the records' `direction` for the objective; for the other
metrics a known word says it (trainlab.objective.implied_direction), else nothing is claimed.
"""

from __future__ import annotations

import re

STAGES = {"train": "training", "val": "validation", "test": "test", "cv": "cross-validation"}
WORDS = {
    "acc": "accuracy",
    "accuracy": "accuracy",
    "loss": "loss",
    "f1": "F1",
    "auroc": "AUROC",
    "auc": "AUC",
    "mse": "mean squared error",
    "rmse": "root mean squared error",
    "mae": "mean absolute error",
    "r2": "R²",
    "bpb": "bits per byte",
    "ppl": "perplexity",
    "perplexity": "perplexity",
    "mean": "mean",
    "std": "std",
}
BEST = "_best"
FOLD = re.compile(r"fold_?(\d+)")


def _words(metric: str) -> str:
    """The metric part in words; itself when none of its words is known."""
    words = metric.split("_")
    if not any(w.lower() in WORDS for w in words):
        return metric
    return " ".join(WORDS.get(w.lower(), w) for w in words)


def label(name: str) -> str:
    """A readable label for any metric name (see the module's docstring)."""
    *stages, metric = str(name).split("/")
    best = metric.endswith(BEST) and len(metric) > len(BEST)
    metric = metric[: -len(BEST)] if best else metric
    words = []
    for stage in stages:
        fold = FOLD.fullmatch(stage)
        words.append(f"fold {fold.group(1)}" if fold else STAGES.get(stage, stage))
    text = " ".join([*words, _words(metric)])
    return f"best {text}" if best else text


def capital(text: str) -> str:
    """The first letter upper-cased, the rest as it is (str.capitalize would write 'auroc')."""
    return text[:1].upper() + text[1:]


def base_metric(name: str) -> str:
    """The per-epoch metric an objective is the best of: val/auroc_best -> val/auroc."""
    name = str(name)
    return name[: -len(BEST)] if name.endswith(BEST) else name


def metric_direction(name: str) -> str | None:
    """maximize/minimize by what the metric is (the words of its name, as the run's own
    `optimized_direction: auto` reads them), None when unknown."""
    from trainlab.objective import implied_direction

    return implied_direction(base_metric(name).rsplit("/", 1)[-1])


def better_word(direction: str | None) -> str:
    if direction is None:
        return ""
    return "higher is better" if direction == "maximize" else "lower is better"


def direction_for(metric: str, objective: str | None, direction: str | None) -> str | None:
    """Which way `metric` is better: the records' direction when it is the objective's own
    metric (val/auroc for val/auroc_best), else what the metric is (None: unknown)."""
    if objective is not None and base_metric(metric) == base_metric(objective) and direction:
        return direction
    return metric_direction(metric)


def titled(name: str, direction: str | None) -> str:
    """`Best validation mean squared error (lower is better)`."""
    better = better_word(direction)
    return capital(label(name)) + (f" ({better})" if better else "")
