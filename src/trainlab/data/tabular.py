"""scikit-learn's bundled tabular data sets, the worked examples of the other tasks: nothing
is downloaded, and each trains in seconds on a CPU.

- `BreastCancerDataModule`: 569 tumours, 30 features, benign or malignant: binary.
- `DiabetesDataModule`: 442 patients, 10 features, disease progression after a year:
  regression.
"""

from __future__ import annotations

import functools

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes

from trainlab.data.arrays import ArraysDataModule


@functools.cache
def breast_cancer_arrays() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return data.data, data.target  # target 1: benign (357), 0: malignant (212)


@functools.cache
def diabetes_arrays() -> tuple[np.ndarray, np.ndarray]:
    data = load_diabetes(scaled=False)  # raw units; the module standardizes with train only
    return data.data, data.target


class BreastCancerDataModule(ArraysDataModule):
    """Wisconsin breast cancer: 30 real features per tumour, binary label, stratified split."""

    task = "binary"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return breast_cancer_arrays()


class DiabetesDataModule(ArraysDataModule):
    """Diabetes: 10 features per patient, one real target (standardized with the training
    split's mean and std, see ArraysDataModule)."""

    task = "regression"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return diabetes_arrays()
