"""The Optuna sweeper of this template (`hparams_search=optuna`, conf/hydra/sweeper/optuna.yaml),
on current Optuna through its ask-and-tell API, with pruning, a study that `n_trials` tops up,
and several workers sharing one study. Hydra finds it here by plugin discovery; the work is
in trainlab.search (optuna_sweep: the worker's run; optuna_study: ask, launch, tell;
space: the search-space syntax; optuna_settings: the settings; storage: where the study is).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings  # checked in sweep(), and before by RunDirGuard
        self.config = None
        self.launcher = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        from trainlab.heap import unpause_for_launcher

        unpause_for_launcher(str(config.hydra.launcher._target_))
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from trainlab.checks import ConfigError
        from trainlab.search.optuna_sweep import SweepFailed, run_study  # imported at start-up

        try:
            return run_study(self, arguments)
        except (ConfigError, SweepFailed) as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(2 if isinstance(err, ConfigError) else 1)
