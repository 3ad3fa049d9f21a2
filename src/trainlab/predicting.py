"""`predict=<split>`: the model's outputs per sample of one split, in a CSV of the run dir.

`<run dir>/predictions_<split>.csv`, written after the test (trainlab.run).

The contract with the models: `predict_step(batch, batch_idx)` returns a dict of per-sample
columns, each a tensor whose first dimension is the batch's length: 1-D tensors become one
column `<name>`, 2-D (batch, k) ones the columns `<name>_0` ... `<name>_{k-1}`. The CSV starts
with `index`, the sample's position within the split (then `sample`, its number in the whole
data set, when the DataModule has `split_indices`), and its rows are in that order: the split
is served unshuffled (the train split too), and under DDP each rank's share is gathered by
those indices, so that the file is the same on one device or eight.

Only the in-memory DataModules (trainlab.data.batching.InMemoryDataModule, whose `train_set`,
`val_set` and `test_set` are the splits) are supported.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from trainlab.checks import ConfigError
from trainlab.data.batching import InMemoryDataModule
from trainlab.record import write_text_atomic

SPLITS = ("train", "val", "test")


def write_predictions(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    split: str,
    ckpt_path: str | None,
    run_dir: Path,
) -> Path:
    """Predict `split` with the weights of `ckpt_path` (None: the module's current ones) and
    write `<run_dir>/predictions_<split>.csv` atomically (global rank 0); returns its path."""
    check_can_predict(module, datamodule, split)
    loader = split_loader(datamodule, split)
    collector = _Collect(split)
    trainer.callbacks.append(collector)
    try:
        trainer.predict(
            module,
            dataloaders=loader,
            ckpt_path=ckpt_path,
            weights_only=True,
            return_predictions=False,
        )
    finally:
        trainer.callbacks.remove(collector)
    indices, columns = _gathered(trainer, *collector.finished())
    columns = {**sample_numbers(datamodule, split, indices), **columns}
    path = Path(run_dir) / f"predictions_{split}.csv"
    if trainer.is_global_zero:
        write_text_atomic(path, as_csv(indices, columns))
    return path


def check_can_predict(module: L.LightningModule, datamodule: Any, split: str) -> None:
    """What predict=<split> needs of the model and the data, refused before any predicting:
    a split of this name, a predict_step of the module's own, an in-memory DataModule."""
    if split not in SPLITS:
        raise ConfigError(
            f"predict={split} is not allowed: use one of {', '.join(SPLITS)} (the split whose "
            "predictions go to <run dir>/predictions_<split>.csv), or null."
        )
    if type(module).predict_step is L.LightningModule.predict_step:
        raise ConfigError(
            f"predict={split} needs the model's predict_step to return a dict of per-sample "
            f"columns ({{name: tensor of the batch's length}}), but {type(module).__name__} "
            "has Lightning's default predict_step, which returns the bare forward output. "
            "Give the model a predict_step that returns such a dict, or leave predict=null."
        )
    if not isinstance(datamodule, InMemoryDataModule):
        raise ConfigError(
            f"predict={split} serves the split from an in-memory DataModule (train_set, val_set, "
            f"test_set), but the data is a {type(datamodule).__name__}. Leave predict=null."
        )


def split_loader(datamodule: InMemoryDataModule, split: str) -> torch.utils.data.DataLoader:
    """The split's samples in their order within the split, never shuffled."""
    datamodule.setup("predict")  # the splits are made in setup (a no-op once they are)
    dataset = getattr(datamodule, f"{split}_set", None)
    if dataset is None:
        has = [s for s in SPLITS if getattr(datamodule, f"{s}_set", None) is not None]
        raise ConfigError(
            f"predict={split}: {type(datamodule).__name__} has no {split} split (its {split}_set "
            f"is None after setup). Predict one it has ({', '.join(has) or 'none'}), or leave "
            "predict=null."
        )
    return datamodule._loader(dataset)


class _Collect(BasePredictionWriter):
    """Each batch's columns, checked against the contract as they come, with the positions
    within the split of the batch's samples (this rank's share under DDP)."""

    def __init__(self, split: str) -> None:
        super().__init__(write_interval="batch")
        self.split = split
        self.indices: list[np.ndarray] = []
        self.batches: list[dict[str, np.ndarray]] = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        if batch_indices is None or len(batch_indices) == 0:
            raise RuntimeError("Lightning did not say which samples the predicted batch holds")
        self.indices.append(np.asarray(batch_indices, dtype=np.int64))
        self.batches.append(_columns_of(prediction, len(batch_indices), type(pl_module).__name__))
        if self.batches[0].keys() != self.batches[-1].keys():
            raise ConfigError(
                f"predict={self.split}: {type(pl_module).__name__}.predict_step returned the "
                f"columns {', '.join(self.batches[-1])} for batch {batch_idx}, but "
                f"{', '.join(self.batches[0])} for the first one: every batch must return the "
                "same columns."
            )

    def finished(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not self.batches:
            return np.zeros(0, dtype=np.int64), {}
        indices = np.concatenate(self.indices)
        names = self.batches[0]
        columns = {name: np.concatenate([b[name] for b in self.batches]) for name in names}
        return indices, columns


def _columns_of(prediction: Any, size: int, model: str) -> dict[str, np.ndarray]:
    """predict_step's dict as CSV columns (2-D tensors cut into `<name>_<j>`), on the CPU."""
    contract = (
        "a dict of per-sample columns {name: tensor}, each tensor 1-D of the batch's length or "
        "2-D (batch, k)"
    )
    if not isinstance(prediction, dict) or not prediction:
        raise ConfigError(
            f"predict: {model}.predict_step must return {contract}, but it returned "
            f"{_what(prediction)}."
        )
    columns: dict[str, np.ndarray] = {}
    for name, value in prediction.items():
        if not isinstance(value, torch.Tensor) or value.dim() not in (1, 2) or len(value) != size:
            raise ConfigError(
                f"predict: {model}.predict_step must return {contract}; its {name!r} is "
                f"{_what(value)} for a batch of {size} samples."
            )
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # bf16 and half have no numpy dtype; float32 keeps them
        array = value.numpy()
        names = [str(name)] if array.ndim == 1 else [f"{name}_{j}" for j in range(array.shape[1])]
        taken = [n for n in names if n in columns or n == "index"]
        if taken:
            raise ConfigError(
                f"predict: {model}.predict_step returns two columns named {taken[0]!r} (the CSV "
                "starts with 'index', the position within the split, and a 2-D tensor <name> "
                "becomes <name>_0, <name>_1, ...): give them other names."
            )
        for j, n in enumerate(names):
            columns[n] = array if array.ndim == 1 else array[:, j]
    return columns


def _what(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return "an empty dict" if not value else f"a dict of {', '.join(map(str, value))}"
    return f"a {type(value).__name__}"


def _gathered(
    trainer: L.Trainer, indices: np.ndarray, columns: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every rank's rows (each rank predicted every world_size-th sample), in split order."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if trainer.world_size > 1 and distributed:
        shares: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shares, (indices, columns))
        shares = [s for s in shares if len(s[0])]
        if shares:
            indices = np.concatenate([s[0] for s in shares])
            columns = {n: np.concatenate([s[1][n] for s in shares]) for n in shares[0][1]}
    order = np.argsort(indices, kind="stable")
    return indices[order], {name: values[order] for name, values in columns.items()}


def sample_numbers(datamodule: Any, split: str, indices: np.ndarray) -> dict[str, np.ndarray]:
    """`sample`: each row's number in the whole data set (ArraysDataModule's `split_indices`,
    e.g. its row of sklearn's load_diabetes()), so that predictions join back to the raw
    data; {} for a DataModule that cannot say."""
    split_indices = getattr(datamodule, "split_indices", None)
    if split_indices is None:
        return {}
    numbers = np.asarray(split_indices()[split])
    return {"sample": numbers[indices]} if len(numbers) > int(indices.max(initial=-1)) else {}


def as_csv(indices: np.ndarray, columns: dict[str, np.ndarray]) -> str:
    """`index` first, then the columns; floats in the shortest form that reads back the same
    float32 (0.1, not 0.10000000149011612)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", *columns])
    cells = [indices.astype(str), *(_cells(values) for values in columns.values())]
    writer.writerows(zip(*cells, strict=True))
    return out.getvalue()


def _cells(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.bool_:
        return values.astype(np.int8).astype(str)
    return values.astype(str)
