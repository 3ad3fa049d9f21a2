"""A data set that fits in memory as two arrays, as a LightningDataModule: the split, the
scaling and the folds that every such data set needs, written once.

A subclass says what its task is (`task`) and where its arrays come from (`arrays()`); it gets
a train/val/test split fixed by `seed` (stratified for classification), inputs standardized
with the training split's statistics only, K-fold cross-validation over train+val, exact
resumes (InMemoryDataModule) and a `spec` the model configs are sized from.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from trainlab.checks import ConfigError, check_split_fractions
from trainlab.data.batching import InMemoryDataModule, TensorBatches
from trainlab.data.spec import DataSpec

CLASSIFICATION = ("multiclass", "binary")


class ArraysDataModule(InMemoryDataModule):
    """Inputs `x` of shape (N, ...) and targets `y` of shape (N,) — class indices 0..K-1 for
    `multiclass`, 0/1 for `binary`, values for `regression` (or (N, T) for T targets).

    With `folds=K` (K >= 2) train and val are pooled and cut into K folds (stratified for
    classification); fold `fold` validates and the other K-1 train. The test split is the
    same as without folds and is never part of any fold.

    Regression targets are standardized with the training split's mean and std too
    (`scale_targets`), so one learning rate suits any unit, and val/mse reads as a share of the
    target's variance: 1.0 is what predicting the mean scores.
    """

    task: str = "multiclass"
    # a feature's std is floored at this before dividing by it (a constant feature stays 0)
    min_std: float = 1e-6

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        folds: int = 0,
        fold: int = 0,
        scale_targets: bool = True,
    ) -> None:
        super().__init__()
        check_split_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.folds = folds
        self.fold = fold
        self.scale_targets = scale_targets
        self.target_mean: torch.Tensor | None = None  # regression, once set up
        self.target_std: torch.Tensor | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of the whole data set; cache them (functools.cache): the run
        asks several times (spec, split, setup, each fold)."""
        raise NotImplementedError(f"{type(self).__name__} must define arrays()")

    @property
    def classifies(self) -> bool:
        return self.task in CLASSIFICATION

    @property
    def spec(self) -> DataSpec:
        x, y = self.arrays()
        if not self.classifies:
            targets = 1 if y.ndim == 1 else y.shape[1]
            return DataSpec(self.task, tuple(x.shape[1:]), num_targets=targets)
        classes = np.unique(y)
        if not np.array_equal(classes, np.arange(len(classes))):
            raise ConfigError(
                f"{type(self).__name__}: {self.task} labels must be 0..K-1, got {classes[:10]}"
            )
        if self.task == "binary" and len(classes) != 2:
            raise ConfigError(f"{type(self).__name__}: binary labels are 0 and 1, not {classes}")
        return DataSpec(self.task, tuple(x.shape[1:]), num_classes=len(classes))

    def split_indices(self) -> dict[str, np.ndarray]:
        """Indices of the train/val/test samples, the same for the same seed; a split too
        small to score (under two samples: R² and AUROC need two) is refused."""
        if self.folds >= 2 and not 0 <= self.fold < self.folds:
            raise ConfigError(f"data.fold={self.fold}: use 0..{self.folds - 1} (cv.folds)")
        try:
            split = self._split_indices()
        except ValueError as err:  # scikit-learn's: a share rounds to no sample, too few
            raise ConfigError(
                f"{type(self).__name__} ({len(self.arrays()[1])} samples) cannot be split with "
                f"data.val_fraction={self.val_fraction}, data.test_fraction="
                f"{self.test_fraction}, cv.folds={self.folds}: {err}"
            ) from err
        self._check_scorable(split)
        return split

    def _check_scorable(self, split: dict[str, np.ndarray]) -> None:
        smallest = {"test": len(split["test"]), "val": len(split["val"])}
        if self.folds >= 2:
            pool = len(split["train"]) + len(split["val"])
            smallest["val"] = pool // self.folds  # KFold's smallest validation fold
            if smallest["val"] < 2:
                raise ConfigError(
                    f"cv.folds={self.folds} leaves {smallest['val']} sample(s) in a fold's "
                    f"validation split ({pool} train+val samples of {type(self).__name__}): "
                    f"scores such as R² and AUROC need two; use cv.folds from 2 to {pool // 2}"
                )
        for name, size in smallest.items():
            if size < 2:
                raise ConfigError(
                    f"the {name} split of {type(self).__name__} holds {size} sample(s) with "
                    f"data.{name}_fraction={getattr(self, f'{name}_fraction')}: scores such as "
                    f"R² and AUROC need two; give a larger data.{name}_fraction"
                )

    def _split_indices(self) -> dict[str, np.ndarray]:
        labels = self.arrays()[1]
        strata = labels if self.classifies else None
        everything = np.arange(len(labels))
        rest, test = train_test_split(
            everything, test_size=self.test_fraction, stratify=strata, random_state=self.seed
        )
        val_share_of_rest = self.val_fraction / (1.0 - self.test_fraction)
        train, val = train_test_split(
            rest,
            test_size=val_share_of_rest,
            stratify=None if strata is None else labels[rest],
            random_state=self.seed,
        )
        if self.folds < 2:
            return {"train": train, "val": val, "test": test}
        pool = np.concatenate([train, val])
        if self.classifies:
            folds = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
            parts = list(folds.split(pool, labels[pool]))
        else:
            parts = list(KFold(self.folds, shuffle=True, random_state=self.seed).split(pool))
        train_part, val_part = parts[self.fold]
        return {"train": pool[train_part], "val": pool[val_part], "test": test}

    def train_size(self) -> int:
        """Samples in the training split, known before `setup` (for checking `batch_size`)."""
        return len(self.split_indices()["train"])

    def input_scale(self, train_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of each input value over the training split."""
        mean = train_inputs.mean(dim=0, keepdim=True)
        return mean, train_inputs.std(dim=0, keepdim=True).clamp_min(self.min_std)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        raw_x, raw_y = self.arrays()
        x = torch.tensor(raw_x, dtype=torch.float32)
        y = torch.tensor(raw_y, dtype=torch.long if self.task == "multiclass" else torch.float32)
        split = {name: torch.as_tensor(idx) for name, idx in self.split_indices().items()}
        mean, std = self.input_scale(x[split["train"]])
        x = (x - mean) / std
        if self.task == "regression" and self.scale_targets:
            train_y = y[split["train"]]
            self.target_mean, self.target_std = train_y.mean(0), train_y.std(0).clamp_min(1e-12)
            y = (y - self.target_mean) / self.target_std
        self.train_set = TensorBatches(x[split["train"]], y[split["train"]])
        self.val_set = TensorBatches(x[split["val"]], y[split["val"]])
        self.test_set = TensorBatches(x[split["test"]], y[split["test"]])
