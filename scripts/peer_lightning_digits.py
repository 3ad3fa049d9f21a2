"""The peer for `python train.py`: the same digits run written the way most Lightning
templates write it (issue 17, requirement 5).

What "most templates" do, and this does: a LightningModule that calls `self.log` every step
(train loss and accuracy, `on_step=True, on_epoch=True, prog_bar=True`), a torchmetrics
`Accuracy` per split updated every step and logged as an object, a DataLoader over a
TensorDataset (collating sample by sample), a ModelCheckpoint on val/acc (best + last), the
progress bar, a CSV logger, and the test on the best checkpoint. The data split, the network,
its initial weights, Adam lr 1e-3, batch 64 and 20 epochs are those of `scripts/plain_digits.py`
(its functions are imported), so the three sides (plain, template, peer) do the same work;
only the order of the batches differs (the DataLoader's own shuffle).

    OMP_NUM_THREADS=1 python scripts/peer_lightning_digits.py [--epochs 20] [--out DIR]

Prints one JSON line: fit_s (the training loop: on_train_start to on_train_end, as the
template's trained.loop_s), test_s, steps, steps_per_s, val_acc_best, test_acc.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torchmetrics
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_digits import add_run_arguments, digits_splits, mlp  # noqa: E402


class DigitsClassifier(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = mlp()
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)

    def forward(self, x):
        return self.net(x)

    def _step(self, batch, stage: str, metric):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric(logits, y)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", metric, on_step=stage == "train", on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", self.test_acc)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class LoopTimer(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--out", type=Path, help="checkpoints and logs (default: a temp dir)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    data = digits_splits(args.seed)
    L.seed_everything(args.seed, verbose=False)
    model = DigitsClassifier(args.lr)
    loaders = {
        name: DataLoader(
            TensorDataset(*data[name]), batch_size=args.batch_size, shuffle=name == "train"
        )
        for name in ("train", "val", "test")
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        timer = LoopTimer()
        trainer = L.Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            devices=1,
            logger=CSVLogger(out / "logs"),
            callbacks=[
                ModelCheckpoint(
                    dirpath=out / "checkpoints", monitor="val/acc", mode="max", save_last=True
                ),
                timer,
            ],
            num_sanity_val_steps=2,
        )
        trainer.fit(model, loaders["train"], loaders["val"])
        started = time.perf_counter()
        (tested,) = trainer.test(model, loaders["test"], ckpt_path="best", verbose=False)
        test_s = time.perf_counter() - started
        best = float(trainer.checkpoint_callback.best_model_score)
    steps = trainer.global_step
    print(
        json.dumps(
            {
                "fit_s": round(timer.seconds, 4),
                "test_s": round(test_s, 4),
                "steps": steps,
                "steps_per_s": round(steps / timer.seconds, 2),
                "val_acc_best": round(best, 6),
                "test_acc": round(float(tested["test/acc"]), 6),
            }
        )
    )


if __name__ == "__main__":
    main()
