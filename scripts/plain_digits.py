"""The reference for `python train.py`: the same training in a plain PyTorch loop.

No Lightning, no Hydra, no torchmetrics, nothing from trainlab: the data split and the
network are written out here so that this file stays an independent yardstick. It does the
work `python train.py` does with its defaults:

- data: scikit-learn's 8x8 digits, the stratified train/val/test split of
  `trainlab.data.digits.DigitsDataModule(seed=42)` (val 15 %, test 20 %), pixels
  standardized with the train split's mean and std (std floored at 1), shape (N, 1, 8, 8);
- model: MLP 64-256-256-10 (flatten, Linear-ReLU, Linear-ReLU, Linear), built right after
  `torch.manual_seed(seed)`, as `seed_everything(seed)` leaves it;
- Adam lr 1e-3, batch 64 reshuffled every epoch, 20 epochs, cross-entropy;
- val accuracy after every epoch, the weights of the best epoch kept (first best wins, like
  ModelCheckpoint), and test accuracy of those weights at the end.

    OMP_NUM_THREADS=1 python scripts/plain_digits.py [--epochs 20] [--batch-size 64]

Prints one JSON line: fit_s (wall seconds of the training loop: every epoch's training and
validation), test_s, steps (optimizer steps), steps_per_s, val_acc_best, test_acc.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F


def digits_splits(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.2):
    """{"train"|"val"|"test": (images (N, 1, 8, 8), labels (N,))}, as DigitsDataModule."""
    digits = load_digits()
    labels_np = digits.target
    everything = np.arange(len(labels_np))
    rest, test = train_test_split(
        everything, test_size=test_fraction, stratify=labels_np, random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1.0 - test_fraction),
        stratify=labels_np[rest],
        random_state=seed,
    )
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(labels_np, dtype=torch.long)
    train_images = images[torch.as_tensor(train)]
    mean = train_images.mean(dim=0, keepdim=True)
    std = train_images.std(dim=0, keepdim=True).clamp_min(1.0)
    return {
        name: ((images[torch.as_tensor(idx)] - mean) / std, labels[torch.as_tensor(idx)])
        for name, idx in (("train", train), ("val", val), ("test", test))
    }


def mlp() -> nn.Module:
    """trainlab.models.nets.MLP(64, (256, 256), 10): the same layers in the same order."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Accuracy over the whole split, in batches of `batch_size` like a DataLoader."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        correct += (logits.argmax(dim=1) == y[i : i + batch_size]).sum().item()
    model.train()
    return correct / len(x)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The run this script and its peers (peer_lightning_digits.py) share, with train.py's
    defaults: epochs, batch size, lr, seed."""
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    args = parser.parse_args()

    torch.set_num_threads(1)
    data = digits_splits(args.seed)
    x_train, y_train = data["train"]
    x_val, y_val = data["val"]
    x_test, y_test = data["test"]

    torch.manual_seed(args.seed)
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    steps = 0
    best_acc, best_state = -1.0, None
    started = time.perf_counter()
    for epoch in range(args.epochs):
        # a fresh order per epoch from (seed, epoch), the rule of the template's EpochShuffle,
        # so both sides train on the same batches
        shuffle = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
        order = torch.randperm(len(x_train), generator=shuffle)
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        val_acc = accuracy(model, x_val, y_val, args.batch_size)
        if val_acc > best_acc:  # the first best epoch wins, as in ModelCheckpoint
            best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
    fit_s = time.perf_counter() - started

    started = time.perf_counter()
    model.load_state_dict(best_state)
    test_acc = accuracy(model, x_test, y_test, args.batch_size)
    test_s = time.perf_counter() - started

    result = {
        "fit_s": round(fit_s, 4),
        "test_s": round(test_s, 4),
        "steps": steps,
        "steps_per_s": round(steps / fit_s, 2),
        "val_acc_best": round(best_acc, 6),
        "test_acc": round(test_acc, 6),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
