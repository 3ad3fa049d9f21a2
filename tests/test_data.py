"""The digits split: stratified, disjoint, fixed by seed; standardized on train statistics only."""

from __future__ import annotations

import numpy as np
import torch

from trainlab.data.digits import DigitsDataModule


def test_split_is_disjoint_stratified_and_seeded():
    dm = DigitsDataModule(seed=0)
    split = dm.split_indices()
    sizes = {name: len(idx) for name, idx in split.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360 and sizes["train"] == dm.train_size()
    assert not set(split["train"]) & set(split["val"])
    assert not set(split["train"]) & set(split["test"])
    assert not set(split["val"]) & set(split["test"])

    from sklearn.datasets import load_digits

    labels = load_digits().target
    for idx in split.values():  # every class in every split, in proportion
        counts = np.bincount(labels[idx], minlength=10) / len(idx)
        assert np.abs(counts - 0.1).max() < 0.02

    same = DigitsDataModule(seed=0).split_indices()
    other = DigitsDataModule(seed=1).split_indices()
    assert all((same[k] == split[k]).all() for k in split)
    assert not (other["test"] == split["test"]).all()


def test_standardized_with_train_statistics_only():
    dm = DigitsDataModule(seed=0)
    dm.setup()
    x_train = dm.train_set.tensors[0]
    x_val = dm.val_set.tensors[0]
    assert x_train.shape[1:] == (1, 8, 8)
    assert torch.allclose(x_train.mean(dim=0), torch.zeros(1, 8, 8), atol=1e-5)
    assert not torch.allclose(x_val.mean(dim=0), torch.zeros(1, 8, 8), atol=1e-3)


def test_batches_are_whole_tensors_of_batch_size():
    dm = DigitsDataModule(batch_size=32, seed=0)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.long
    assert len(dm.train_dataloader()) == -(-dm.train_size() // 32)
