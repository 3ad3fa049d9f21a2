"""Batches sliced from in-memory tensors, and the DataModule plumbing that serves them.

DataLoader calls a dataset's `__getitems__` with a whole batch of indices, so one fancy
index replaces a Python loop over samples and a collate. The datasets stay plain map-style
datasets, so Lightning can still put a DistributedSampler in front of them.

The training order is a function of (seed, epoch) alone and can start part-way through an
epoch: a run resumed from a mid-epoch checkpoint sees exactly the batches the interrupted run
would have seen next.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Sampler


class TensorBatches(Dataset):
    """Tensors indexed a whole batch at a time."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= index < len(self):  # so that list(dataset) stops
            raise IndexError(index)
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(t[index] for t in self.tensors)


def already_collated(batch):
    """`__getitems__` returns a finished batch: nothing left to collate."""
    return batch


class EpochShuffle(Sampler[int]):
    """A fresh random order each epoch, drawn from (seed, epoch) only, never from the global
    RNG, so that it does not depend on what else ran before; `skip` drops the first samples of
    one epoch (those a resumed run has already trained on). Lightning calls `set_epoch`."""

    def __init__(self, size: int, seed: int, skip: int = 0, skip_epoch: int = 0) -> None:
        self.size, self.seed = size, seed
        self.epoch = 0
        self.skip, self.skip_epoch = skip, skip_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        # a generator: the order is drawn at the first batch, after Lightning set the epoch
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        skip = self.skip if self.epoch == self.skip_epoch else 0
        self.skip = 0  # only the first pass over the resumed epoch is shortened
        yield from order[skip:].tolist()


class InMemoryDataModule(L.LightningDataModule):
    """Serves `train_set`, `val_set` and `test_set` (set in `setup`) in batches of
    `batch_size`, shuffling only the training set, in an order that resumes exactly."""

    batch_size: int
    seed: int = 0
    num_workers: int = 0
    train_set: Dataset | None = None
    val_set: Dataset | None = None
    test_set: Dataset | None = None
    _resume_at: dict[str, int] | None = None

    def _loader(self, dataset: Dataset, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=already_collated,
            persistent_workers=self.num_workers > 0,
            # its own generator: making an iterator does not draw from the global RNG, which
            # dropout uses, so a resumed run draws the same dropout masks as an unbroken one
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        at = self._resume_at or {"epoch": 0, "batches": 0}
        self._resume_at = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning puts a DistributedSampler around this order, which cannot start
            # part-way: a resumed epoch starts from its beginning on every rank
            at = {"epoch": 0, "batches": 0}
        order = EpochShuffle(
            len(self.train_set),
            self.seed,
            skip=at["batches"] * self.batch_size,
            skip_epoch=at["epoch"],
        )
        if self.trainer is not None:
            # worker processes read the order when the first iterator is made, before
            # Lightning's set_epoch for the epoch it starts with (a resumed one, maybe)
            order.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return self._loader(self.train_set, order)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        """Batches are tuples of tensors: moved one by one (nothing to do when they are there
        already), not by Lightning's generic walk over any nesting, which costs a small model
        more than its step."""
        if isinstance(batch, tuple) and all(isinstance(t, torch.Tensor) for t in batch):
            return tuple(
                t if t.device == device else t.to(device, non_blocking=True) for t in batch
            )
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    # --- checkpointed with the run (Lightning calls these when saving and resuming) ---------

    def state_dict(self) -> dict[str, Any]:
        """How far training got in the current epoch: the batches the model has trained on."""
        if self.trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return {}
        loop = self.trainer.fit_loop
        # the epoch those batches belong to: the last one started (at an epoch's end the
        # epoch counter has already moved on, the batch count not yet)
        return {
            "epoch": loop.epoch_progress.current.started - 1,
            "batches": loop.epoch_loop.batch_progress.current.processed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_at = dict(state) if state else None
