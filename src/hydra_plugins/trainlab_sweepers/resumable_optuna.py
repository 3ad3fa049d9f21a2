"""Hydra's Optuna sweeper, made resumable and honest (Hydra loads sweepers only from
`hydra_plugins`); the loop is trainlab.search.optuna_study.run_study.

The study lives in SQLite inside the sweep directory (`conf/hparams_search/optuna.yaml`).
Running the same command again with the same `hydra.sweep.dir` loads the study and goes on
from its trials; job numbers continue after them, so no earlier job directory is reused.
The continued part draws fresh random numbers, so it is not replayed from `seed`.
Diverged, failed and interrupted jobs are told to the study as failed trials, never as the
worst objective they return to other sweepers.
"""

from __future__ import annotations

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        from trainlab.search.optuna_study import run_study  # Hydra imports plugins at start-up

        return run_study(self.sweeper, arguments)
