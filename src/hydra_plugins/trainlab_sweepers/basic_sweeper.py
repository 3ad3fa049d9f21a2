"""`hydra/sweeper=grid`, the default sweeper of `-m` (conf/hydra/sweeper/grid.yaml): Hydra's
BasicSweeper, each job's config composed once rather than twice
(trainlab.search.config_cache)."""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper as HydraBasicSweeper


class BasicSweeper(HydraBasicSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        from trainlab.heap import unpause_for_launcher
        from trainlab.search.config_cache import composing_once

        unpause_for_launcher(str(config.hydra.launcher._target_))
        super().setup(
            hydra_context=composing_once(hydra_context), task_function=task_function, config=config
        )
