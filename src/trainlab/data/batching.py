"""Batches sliced from in-memory tensors, and the DataModule plumbing that serves them.

DataLoader calls a dataset's `__getitems__` with a whole batch of indices, so one fancy
index replaces a Python loop over samples and a collate. The datasets stay plain map-style
datasets, so Lightning can still put a DistributedSampler in front of them.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


class TensorBatches(Dataset):
    """Tensors indexed a whole batch at a time."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(t[index] for t in self.tensors)


def already_collated(batch):
    """`__getitems__` returns a finished batch: nothing left to collate."""
    return batch


class InMemoryDataModule(L.LightningDataModule):
    """Serves `train_set`, `val_set` and `test_set` (set in `setup`) in batches of
    `batch_size`, shuffling only the training set."""

    batch_size: int
    num_workers: int = 0
    train_set: Dataset | None = None
    val_set: Dataset | None = None
    test_set: Dataset | None = None

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=already_collated,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
