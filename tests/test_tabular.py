"""The in-memory array DataModules (digits, breast_cancer, diabetes): splits fixed by the
seed, stratified when classifying, scaled with the training split only, folds that partition
train+val and never touch test."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from trainlab.checks import ConfigError
from trainlab.data.arrays import ArraysDataModule
from trainlab.data.digits import DigitsDataModule
from trainlab.data.tabular import BreastCancerDataModule, DiabetesDataModule

MODULES = [DigitsDataModule, BreastCancerDataModule, DiabetesDataModule]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_splits_are_disjoint_complete_and_fixed_by_the_seed(module):
    split = module(seed=3).split_indices()
    everything = np.concatenate(list(split.values()))
    assert len(everything) == len(set(everything)) == len(module().arrays()[1])
    again = module(seed=3).split_indices()
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(module(seed=4).split_indices()["val"], split["val"])


@pytest.mark.parametrize("module", [DigitsDataModule, BreastCancerDataModule])
def test_classification_splits_keep_the_class_shares(module):
    labels = module().arrays()[1]
    split = module(seed=0).split_indices()
    overall = np.bincount(labels) / len(labels)
    for idx in split.values():
        assert np.abs(np.bincount(labels[idx]) / len(idx) - overall).max() < 0.03


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_folds_partition_train_and_val_and_keep_test(module):
    plain = module(seed=1).split_indices()
    pool = set(np.concatenate([plain["train"], plain["val"]]))
    vals = []
    for k in range(4):
        fold = module(seed=1, folds=4, fold=k).split_indices()
        assert np.array_equal(fold["test"], plain["test"])
        assert set(fold["train"]) | set(fold["val"]) == pool
        assert not set(fold["train"]) & set(fold["val"])
        vals.append(set(fold["val"]))
    assert set().union(*vals) == pool and sum(map(len, vals)) == len(pool)


@pytest.mark.parametrize("module", [BreastCancerDataModule, DiabetesDataModule])
def test_inputs_are_scaled_with_the_training_split_only(module):
    datamodule = module(seed=0)
    datamodule.setup()
    train_x = datamodule.train_set.tensors[0]
    assert train_x.mean(0).abs().max() < 1e-5
    assert (train_x.std(0) - 1).abs().max() < 1e-4
    # the val split was scaled by the train split's numbers, not its own
    assert datamodule.val_set.tensors[0].mean(0).abs().max() > 1e-3


def test_regression_targets_are_standardized_and_their_scale_kept():
    datamodule = DiabetesDataModule(seed=0)
    datamodule.setup()
    y = datamodule.train_set.tensors[1]
    assert y.dtype == torch.float32 and abs(float(y.mean())) < 1e-5
    raw = datamodule.arrays()[1][datamodule.split_indices()["train"]]
    assert float(datamodule.target_mean) == pytest.approx(raw.mean(), rel=1e-5)
    kept = DiabetesDataModule(seed=0, scale_targets=False)
    kept.setup()
    assert float(kept.train_set.tensors[1].mean()) == pytest.approx(raw.mean(), rel=1e-5)


def test_binary_targets_are_floats_for_the_loss_and_multiclass_ones_indices():
    binary, multi = BreastCancerDataModule(), DigitsDataModule()
    binary.setup()
    multi.setup()
    assert binary.train_set.tensors[1].dtype == torch.float32
    assert set(binary.train_set.tensors[1].unique().tolist()) == {0.0, 1.0}
    assert multi.train_set.tensors[1].dtype == torch.long


def test_each_module_says_what_it_holds():
    assert DigitsDataModule().spec.num_outputs == 10
    assert DigitsDataModule().spec.image_size == 8
    assert BreastCancerDataModule().spec.in_features == 30
    assert BreastCancerDataModule().spec.num_outputs == 1
    assert DiabetesDataModule().spec.num_targets == 1


class Tiny(ArraysDataModule):
    """20 samples, 3 targets: scikit-learn's linnerud's size."""

    task = "regression"

    def arrays(self):
        rng = np.random.default_rng(0)
        return rng.normal(size=(20, 3)), rng.normal(size=(20, 3))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"folds": 10}, "cv.folds=10 leaves 1 sample(s) in a fold's validation split"),
        ({"folds": 17}, "n_splits=17 greater than the number of samples: n_samples=16"),
        ({"val_fraction": 0.05}, "the val split of Tiny holds 1 sample(s)"),
        ({"test_fraction": 0.01}, "the test split of Tiny holds 1 sample(s)"),
        ({"folds": 3, "fold": 3}, "data.fold=3: use 0..2"),
    ],
)
def test_a_split_too_small_to_score_is_refused_before_training(kwargs, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        Tiny(**kwargs).train_size()
    assert Tiny(folds=5).train_size() == 12  # 16 train+val samples, 4 validate


def test_several_regression_targets_are_sized_and_scaled_each():
    tiny = Tiny(batch_size=4)
    assert (tiny.spec.num_targets, tiny.spec.num_outputs, tiny.spec.in_features) == (3, 3, 3)
    tiny.setup()
    assert tiny.target_mean.shape == (3,)
    assert tiny.train_set.tensors[1].mean(0).abs().max() < 1e-5
