"""Cross-validation: one run = K fits, one per fold of train+val (`cv.folds=K`), each in
its own `fold_<k>/`, and their mean and spread as the run's objective (`cv/mean`)."""

from __future__ import annotations

import copy
import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.callbacks import StopOnSignal
from trainlab.pruning import TrialPruning

log = logging.getLogger(__name__)

# fit_and_test(cfg, stop, announce) -> (metrics, what trained)
FitAndTest = Callable[..., tuple[dict[str, Any], dict[str, Any]]]


def cross_validate(
    cfg: DictConfig,
    fit: FitAndTest,
    stop: StopOnSignal,
    announce: Callable[[dict[str, Any]], None],
    pruning: TrialPruning | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """K runs of `fit` (the pipeline's fit_and_test), one per fold of train+val, each from the
    same seed, in fold_<k>/.
    In an Optuna sweep each fold's value is reported to the trial (Pruned: no more folds).

    Returns per-fold metrics (`fold<k>/<name>`) plus `cv/mean` and `cv/std` of the optimized
    metric; the test split is never used.
    """
    folds = cfg.cv.folds
    output_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, Any] = {}
    values, trained = [], []
    for k in range(folds):
        fold_cfg = copy.deepcopy(cfg)
        OmegaConf.update(fold_cfg, "data.fold", k)
        OmegaConf.update(fold_cfg, "test", False)
        OmegaConf.update(fold_cfg, "paths.output_dir", str(output_dir / f"fold_{k}"))
        log.info("cross-validation: fold %d of %d", k + 1, folds)
        fold_metrics, fold_trained = fit(fold_cfg, stop, announce)
        values.append(float(fold_metrics[cfg.optimized_metric]))
        trained.append(fold_trained)
        metrics.update({f"fold{k}/{name}": v for name, v in fold_metrics.items()})
        if pruning is not None:
            pruning.after_fold(k, values[-1], metrics)
    metrics["cv/mean"] = statistics.fmean(values)
    metrics["cv/std"] = statistics.stdev(values)  # the sample std, as the report's
    log.info(
        "cross-validation: %s = %.4f ± %.4f over %d folds",
        cfg.optimized_metric,
        metrics["cv/mean"],
        metrics["cv/std"],
        folds,
    )
    summary = {
        "folds": folds,
        "metric": cfg.optimized_metric,
        "values": values,
        "mean": metrics["cv/mean"],
        "std": metrics["cv/std"],
    }
    return metrics, {"plan": trained[0]["plan"], "folds": trained, "cv": summary}
