"""`logger=csv`: Lightning's CSVLogger, writing its rows to `csv/metrics.csv` every few
seconds instead of at every `log_metrics`.

Lightning's logger connector calls `save()` after every `log_metrics`, which for the
CSVLogger opens the file and appends (and rewrites it whenever a new column appears): with
the throughput and lr monitors logging every 10 steps and each validation logging, that is a
file write every few steps, a tenth of a 1 ms step's loop. Here rows wait in memory and are
written once `flush_every_s` seconds have passed, whenever a checkpoint is saved (with the
row of the step saved, logged right after: the file holds every row up to the step a resume
continues from), and when the logger is finalized at the end of fit and test. A kill -9
loses at most the last `flush_every_s` seconds of rows, which the resumed run logs again.

A resume in place (`resume=<run dir>`) keeps the rows already written: Lightning's writer
deletes an existing metrics.csv when it opens, so its rows are read first and written back
ahead of the resumed run's. After a kill -9 the rows flushed between the last checkpoint and
the kill appear twice (the resumed run logs those steps again); a stop by signal, or a run
extended with more epochs, has none. (The `step` column is not one clock: the throughput
monitor numbers its validation rows on its own, so rows cannot be told apart by step.)
"""

from __future__ import annotations

import csv
import os
import time
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.utilities import rank_zero_only


class CSVLogger(LightningCSVLogger):
    def __init__(self, *args: Any, flush_every_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flush_every_s = float(flush_every_s)
        self._written_at = time.monotonic()
        self._saved_step: int | None = None  # rows up to this step go out as they come
        self._row_step = -1
        self._kept: list[dict[str, str]] | None = None  # a resumed run's earlier rows

    @property
    def experiment(self):
        if self._experiment is None:
            kept = earlier_rows(os.path.join(self.log_dir, "metrics.csv"))
            writer = LightningCSVLogger.experiment.fget(self)  # deletes the file it finds
            self._kept = kept or None
            return writer
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        if step is not None:
            self._row_step = step

    @rank_zero_only
    def save(self) -> None:
        """What the connector calls after every log_metrics: a write only when it is time,
        or when the row belongs to the step a checkpoint was just saved at."""
        if self._saved_step is not None and self._row_step > self._saved_step:
            self._saved_step = None  # training moved past the saved step
        if (
            self._saved_step is not None
            or time.monotonic() - self._written_at >= self.flush_every_s
        ):
            self.write()

    @rank_zero_only
    def write(self) -> None:
        if self._kept is not None and self._experiment is not None:
            self._experiment.metrics = self._kept + self._experiment.metrics
            self._kept = None
        super().save()
        self._written_at = time.monotonic()

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self.write()
        # the saved step's rows logged after the save (its validation's) are written with it
        self._saved_step = max(
            self._row_step, getattr(checkpoint_callback, "_last_global_step_saved", 0)
        )

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.write()


def earlier_rows(path: str) -> list[dict[str, str]]:
    """The rows of an existing metrics.csv, blanks dropped (Lightning writes every column)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as file:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]
