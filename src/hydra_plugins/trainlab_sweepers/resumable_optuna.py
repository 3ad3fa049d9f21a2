"""Hydra's Optuna sweeper, made resumable (Hydra loads sweepers only from `hydra_plugins`).

The study lives in SQLite inside the sweep directory (`conf/hparams_search/optuna.yaml`).
Running the same command again with the same `hydra.sweep.dir` loads the study and goes on
from its trials; job numbers continue after them, so no earlier job directory is reused.
The continued part draws fresh random numbers, so it is not replayed from `seed`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        import optuna  # here, not at the top: Hydra imports every plugin module at start-up

        impl = self.sweeper
        Path(impl.sweep_dir).mkdir(parents=True, exist_ok=True)  # SQLite needs its folder
        if impl.storage and impl.study_name:
            try:
                study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
            except KeyError:  # no such study yet: a fresh sweep
                pass
            else:
                impl.job_idx = len(study.trials)
                # the seeded sampler would replay its first random suggestions: draw new ones
                impl.sampler.reseed_rng()
                log.info("continuing study %r after its %d trials", impl.study_name, impl.job_idx)
        return super().sweep(arguments)
