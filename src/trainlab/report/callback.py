"""The Hydra callback that writes the report when a multirun ends."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from trainlab.report.summary import write_report

log = logging.getLogger("trainlab.report")


class SweepReport(Callback):
    """Hydra callback: write the report when a multirun ends (never fails the sweep)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            write_report(Path(config.hydra.sweep.dir))
        except Exception as err:  # a report must not turn a finished sweep into a failure
            log.error("could not write the sweep report: %s: %s", type(err).__name__, err)
