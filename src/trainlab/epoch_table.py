"""`<run dir>/epochs.csv`: one row per training epoch, train and val side by side.

Lightning's CSVLogger writes what each `log` call gives, so the train and val numbers of one
epoch land on different rows. `EpochTable` writes one row per epoch instead, with the
columns `epoch` (Lightning's, from 0, as in metrics.csv and the checkpoint names), `step`
(optimizer steps so far), every `train/` and `val/` metric of that epoch and `lr` (the
first param group's, as the epoch trained with it), readable with `pandas.read_csv` as it
is. It needs no logger.

Each row goes to the file in one `write` of a file opened for appending, so a killed run
leaves whole rows; a new column (a metric that first shows up later) rewrites the file
through a temporary file and a rename. Only global rank 0 writes; the file's mode follows
the umask. A resumed run first drops the rows of the epochs it trains again, then appends.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

STAGES = ("train/", "val/")


def as_number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class EpochRows(Callback):
    """Gathers one row per finished training epoch and hands it to `epoch_ended(trainer,
    row)` (rank 0 only).

    A callback's `on_train_epoch_end` runs before the LightningModule's, where the train
    means are logged, so the row is completed at the next hook (the epoch-end checkpoint's
    save, the next epoch's start, the end of training, or an exception), before any new
    training step; the step and lr are
    taken at the epoch end itself, before an epoch-wise scheduler steps. The val numbers are
    those of a validation that ran in that epoch, none if it ran none.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._val: dict[str, float] = {}
        self._val_epoch: int | None = None

    def _fitting(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self._fitting(trainer):
            return
        self._val = metrics_of(trainer.callback_metrics, "val/")
        self._val_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self._fitting(trainer):
            return
        self._pending = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "lr": lr_of(trainer),
        }

    def _complete(self, trainer: L.Trainer) -> None:
        pending, self._pending = self._pending, None
        if pending is None or not trainer.is_global_zero:
            return
        epoch = pending["epoch"]
        val = self._val if self._val_epoch == epoch else {}
        lr = pending.pop("lr")
        row = {**pending, **metrics_of(trainer.callback_metrics, "train/"), **val}
        if lr is not None:
            row["lr"] = lr
        self.epoch_ended(trainer, row)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self._complete(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._complete(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._complete(trainer)  # only an epoch that ended: no training step ran since

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint) -> None:
        # the epoch-end checkpoint: the row is out before it, so that a run killed in between
        # trains that epoch again rather than resuming past a row that was never written
        self._complete(trainer)

    def epoch_ended(self, trainer: L.Trainer, row: dict[str, Any]) -> None:
        raise NotImplementedError


def metrics_of(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: as_number(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


def lr_of(trainer: L.Trainer) -> float | None:
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            return float(group["lr"])
    return None


def csv_text(columns: list[str], rows: list[dict[str, Any]], header: bool) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", restval="")
    if header:
        writer.writeheader()
    writer.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf: pandas reads them back as floats
    return value


class EpochTable(EpochRows):
    """Writes `<run_dir>/epochs.csv` (see the module's docstring)."""

    def __init__(self, run_dir: str | os.PathLike, filename: str = "epochs.csv") -> None:
        super().__init__()
        self.path = Path(run_dir) / filename
        self.columns: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.path.exists():
            self.columns = []
            return
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            self.columns = list(reader.fieldnames or [])
        # resumed: the epochs from current_epoch on are trained again
        kept = [
            r
            for r in rows
            if r.get("epoch", "").isdigit() and int(r["epoch"]) < trainer.current_epoch
        ]
        if len(kept) != len(rows):
            self._replace(kept)

    def epoch_ended(self, trainer: L.Trainer, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.columns]
        if not self.columns or not self.path.exists():
            self.columns = list(row)
            self._append(csv_text(self.columns, [row], header=True))
        elif new:
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            lr = ["lr"] if "lr" in self.columns or "lr" in new else []
            rest = [c for c in self.columns + new if c != "lr"]
            self.columns = rest + lr
            self._replace([*rows, row])
        else:
            self._append(csv_text(self.columns, [row], header=False))

    def _append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, text.encode())  # one write: a kill leaves the row whole or absent
        finally:
            os.close(fd)

    def _replace(self, rows: list[dict[str, Any]]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with temporary.open("w", newline="") as f:  # open(): the mode follows the umask
            f.write(csv_text(self.columns, rows, header=True))
        os.replace(temporary, self.path)
