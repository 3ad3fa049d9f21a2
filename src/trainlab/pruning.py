"""Pruning, on the job's side: a job of an Optuna sweep reports the optimized metric to its
trial after every epoch's validation (after every fold when cross-validating) and stops
there when the study's pruner says so.

The sweeper tells each job its trial number (the environment variable TRAINLAB_OPTUNA_TRIAL,
set through hydra.job.env_set); the study, its storage and the pruner come from the same
sweeper settings the sweep process read (trainlab.search.optuna_settings), from the job's
Hydra config. Only global rank 0 talks to the study; under DDP it broadcasts the decision,
so every rank stops at the same epoch boundary. A pruned job skips its test, records
`"status": "pruned"` with the epoch (or fold), the step and the value, and the sweep tells
the study TrialState.PRUNED.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from lightning.pytorch.callbacks import Callback

from trainlab.ranks import is_other_rank
from trainlab.search.optuna_study import TRIAL_ENV

log = logging.getLogger(__name__)


class Pruned(Exception):
    """The study's pruner stopped this trial; `record` is what metrics.json keeps of it."""

    def __init__(self, record: dict[str, Any], metrics: dict[str, Any] | None = None) -> None:
        super().__init__(f"pruned at step {record['step']}: {record['metric']} {record['value']}")
        self.record = record
        self.metrics = metrics or {}


class TrialPruning:
    """This job's trial (on rank 0; `trial` is None on the other ranks) and its reports."""

    def __init__(self, metric: str, number: int, trial: Any = None, study: str | None = None):
        self.metric = metric
        self.number = number
        self.trial = trial
        self.study = study

    def decide(self, value: float | None, step: int) -> bool:
        """Report `value` at `step` and ask the pruner (rank 0); the decision, on every rank."""
        prune = False
        if self.trial is not None and value is not None and math.isfinite(value):
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        return _broadcast(prune)

    def after_fold(self, fold: int, value: float, metrics: dict[str, Any]) -> None:
        """Cross-validation: report fold `fold`'s value (step = folds done); Pruned, with the
        folds' metrics so far, to stop."""
        if self.decide(value, fold + 1):
            record = {"fold": fold + 1, "step": fold + 1, "value": value, "metric": self.metric}
            raise Pruned(record, metrics)

    def callback(self) -> ReportEachEpoch:
        return ReportEachEpoch(self)

    def recorded(self) -> dict[str, Any]:
        return {"trial": self.number, "study": self.study}


def _broadcast(decision: bool) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return decision
    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


class ReportEachEpoch(Callback):
    """After each epoch's validation: report the optimized metric (step = epochs done) and
    stop training there when the trial is pruned (Lightning ends the fit at that boundary).
    Validations in the middle of an epoch (val_check_interval < 1) report nothing."""

    def __init__(self, pruning: TrialPruning) -> None:
        self.pruning = pruning
        self.pruned: dict[str, Any] | None = None
        self._missing_said = False

    def on_fit_start(self, trainer, pl_module) -> None:
        interval = trainer.val_check_interval
        if self.pruning.trial is not None and isinstance(interval, int) and interval > 1:
            log.warning(
                "trainer.val_check_interval=%s validates by batches, not at an epoch's end: "
                "the trial is told only what epoch-end validations find (none, if none runs)",
                interval,
            )

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        if self.pruned is not None:  # min_epochs kept it training: it stays pruned
            return
        value = trainer.callback_metrics.get(self.pruning.metric)
        if value is None and not self._missing_said and self.pruning.trial is not None:
            self._missing_said = True
            log.warning("%s is not logged at validation: nothing to prune by", self.pruning.metric)
        value = None if value is None else float(value)
        epochs = trainer.current_epoch + 1
        if self.pruning.decide(value, epochs):
            self.pruned = {"epoch": epochs, "step": epochs, "value": value}
            self.pruned["metric"] = self.pruning.metric
            trainer.should_stop = True
            log.info("pruned after epoch %d: %s %.4g", epochs, self.pruning.metric, value)

    def raise_if_pruned(self, trainer, metrics: dict[str, Any]) -> None:
        """After fit: Pruned when the trial was pruned; `epoch` is how far it trained (later
        than the decision when trainer.min_epochs kept it going)."""
        if self.pruned is not None:
            self.pruned["epoch"] = max(self.pruned["epoch"], trainer.current_epoch)
            raise Pruned(self.pruned, metrics)


def trial_pruning(metric: str, max_epochs: int | None, cv_folds: int) -> TrialPruning | None:
    """This job's trial when an Optuna sweep launched it (TRAINLAB_OPTUNA_TRIAL), else None."""
    number = os.environ.get(TRIAL_ENV)
    if number is None or not number.strip().isdigit():
        return None
    if is_other_rank():
        return TrialPruning(metric, int(number))
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from trainlab.search.optuna_settings import build_pruner, is_our_sweeper, settings_of
    from trainlab.search.storage import open_storage, storage_spec

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is None or hydra.mode != RunMode.MULTIRUN or not is_our_sweeper(hydra.sweeper):
        return None  # the variable outlived its sweep (a run started from that shell)
    settings = settings_of(OmegaConf.to_container(hydra.sweeper, resolve=True))
    spec = storage_spec(settings.storage, hydra.sweep.dir)
    study = optuna.load_study(
        study_name=settings.study_name,
        storage=open_storage(spec),
        pruner=build_pruner(settings, max_epochs, cv_folds),
    )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    if study._storage.get_trial(trial_id).state != optuna.trial.TrialState.RUNNING:
        log.warning("trial %s of the study has ended already: nothing is reported", number)
        return None
    trial = optuna.trial.Trial(study, trial_id)
    return TrialPruning(metric, int(number), trial, settings.study_name)
