"""`hydra/launcher=joblib` (conf/hydra/launcher/joblib.yaml): parallel jobs on this machine,
each in a process of its own, so that a job whose process dies (kill -9, out of memory) is
recorded `failed` and the sweep goes on. The logic is in trainlab.search.processes.

A subclass of hydra-joblib-launcher's JoblibLauncher for its configuration (the same keys,
of which only n_jobs applies); it does not use joblib's Parallel, which ends the whole sweep
when one worker dies.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class ProcessPerJobLauncher(JoblibLauncher):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from trainlab.search.processes import launch  # Hydra imports every plugin at start-up

        return launch(self, job_overrides, initial_job_idx)
