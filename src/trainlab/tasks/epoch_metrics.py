"""Epoch metrics summed on the device and logged once per epoch.

Lightning's `self.log` costs about a millisecond per call, and a torchmetrics update runs
input checks that wait for the device: for a small model that is more than the step itself.
Adding a batch's numbers to a few sums in place costs microseconds and never waits.

The sums are plain float32 tensors, not module buffers: DDP would overwrite a buffer with
rank 0's at every forward, and `precision=bf16-true` would cast it to bfloat16. They travel
with checkpoints through the module's checkpoint hooks (`LogsEpochMeans`), so a run resumed
mid-epoch reports the same epoch means as one left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor


class EpochSums:
    """Sums of named batch means weighted by the batch's count (samples, tokens)."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.sums: Tensor | None = None  # made on the device of the first batch

    @torch.no_grad()
    def add(self, count: int, **batch_means: Tensor) -> None:
        if self.sums is None:
            device = batch_means[self.names[0]].device
            # float32 whatever the precision (bf16-true makes bfloat16 the default dtype):
            # a bfloat16 count stops growing at 256 batches of 64
            self.sums = torch.zeros(len(self.names) + 1, device=device, dtype=torch.float32)
        for i, name in enumerate(self.names):
            self.sums[i] += batch_means[name].detach().float() * count
        self.sums[-1] += count

    def reset(self) -> None:
        if self.sums is not None:
            self.sums.zero_()

    def running_means(self) -> dict[str, float]:
        """This rank's means of the epoch so far, as numbers, for a display: reading them
        waits for the device, so the caller decides how often. {} before the first batch."""
        if self.sums is None:
            return {}
        *sums, count = self.sums.tolist()
        if not count:
            return {}
        return {name: total / count for name, total in zip(self.names, sums, strict=True)}

    def pop_means(self, strategy) -> dict[str, Tensor]:
        """This epoch's means over every rank (one all-reduce); the sums start again at zero."""
        if self.sums is None:
            return {}
        sums = self.sums.clone()
        if strategy is not None and strategy.world_size > 1:
            sums = strategy.reduce(sums, reduce_op="sum")
        self.sums.zero_()
        return {name: sums[i] / sums[-1] for i, name in enumerate(self.names)}


class LogsEpochMeans:
    """For LightningModules whose `_step(batch, sums, scores)` adds a batch to `train_metrics`,
    `val_metrics` or `test_metrics` (`EpochSums`) and, for val and test, may update
    `val_scores` / `test_scores` (torchmetrics `MetricCollection`s, when the module has
    them): the step hooks, the means and scores logged as `<stage>/<name>` once per epoch,
    the part-done sums kept in checkpoints, and the best validation value so far in the
    buffer `val_<best_metric>_best` (its `best_mode` is "max" or "min"), logged as
    `val/<best_metric>_best`. `keep_best` chooses which: the run calls it with the
    objective's metric and direction."""

    best_metric: str
    best_mode: str

    def keep_best(self, metric: str, mode: str) -> None:
        """Track the best-so-far of val/<metric>, the largest (`max`) or smallest (`min`); a
        buffer, so a resumed run keeps it."""
        if mode not in ("max", "min"):
            raise ValueError(f"best mode {mode!r}: use max or min")
        if metric not in self.stage_names("val"):
            raise ValueError(f"val/{metric} is not logged; val/ has {self.stage_names('val')}")
        previous = f"val_{getattr(self, 'best_metric', '')}_best"
        if previous in self._buffers:
            del self._buffers[previous]
        self.best_metric, self.best_mode = metric, mode
        start = torch.tensor(float("-inf") if mode == "max" else float("inf"))
        self.register_buffer(f"val_{metric}_best", start.to(self.device))

    def scores_of(self, stage: str):
        """The stage's torchmetrics collection, or None (a submodule, so not a class default:
        nn.Module finds registered modules only after the class attributes)."""
        return getattr(self, f"{stage}_scores", None)

    def stage_names(self, stage: str) -> tuple[str, ...]:
        sums: EpochSums = getattr(self, f"{stage}_metrics")
        scores = self.scores_of(stage)
        return sums.names + (tuple(scores.keys()) if scores is not None else ())

    @property
    def logged_metrics(self) -> tuple[str, ...]:
        """Every name this module logs: `optimized_metric` is checked against it."""
        stages = ("train", "val")
        names = [f"{stage}/{name}" for stage in stages for name in self.stage_names(stage)]
        names.append(f"val/{self.best_metric}_best")
        names += [f"test/{name}" for name in self.stage_names("test")]
        return tuple(names)

    def training_step(self, batch, batch_idx: int):
        return self._step(batch, self.train_metrics, None)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_metrics, self.scores_of("val"))

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.test_metrics, self.scores_of("test"))

    def on_validation_epoch_start(self) -> None:
        self._start_epoch("val")

    def on_test_epoch_start(self) -> None:
        self._start_epoch("test")

    def _start_epoch(self, stage: str) -> None:
        """A val or test epoch starts from nothing: one that was cut short (the batch-size
        finder's out-of-memory trial) leaves no partial sums behind. (Training sums are
        not reset here: a resumed run restores its part-done epoch into them.)"""
        getattr(self, f"{stage}_metrics").reset()
        scores = self.scores_of(stage)
        if scores is not None:
            scores.reset()
        self._scores_in_float32(stage)

    def _scores_in_float32(self, stage: str) -> None:
        """`precision=bf16-true` casts the whole module, torchmetrics' sums and the
        best-so-far buffer included (torchmetrics' guard misses `.to(dtype)`): they are put
        back to float32, so a score and the objective are as exact as in fp32."""
        scores = self.scores_of(stage)
        if scores is not None:
            scores.set_dtype(torch.float32)
        best = f"val_{self.best_metric}_best"
        if stage == "val" and self._buffers[best].dtype != torch.float32:
            self._buffers[best] = self._buffers[best].float()

    def on_train_epoch_end(self) -> None:
        self.log_epoch_means("train", self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a few batches of untrained (or resumed) weights
            self.val_metrics.pop_means(self.trainer.strategy)
            if self.scores_of("val") is not None:
                self.scores_of("val").reset()
            return
        value = self.log_epoch_means("val", self.val_metrics)[self.best_metric]
        best = getattr(self, f"val_{self.best_metric}_best")
        if self.trainer.state.fn == TrainerFn.FITTING:
            better = torch.maximum if self.best_mode == "max" else torch.minimum
            best.copy_(better(best, value))
        else:  # validate(): no history, the best is this one
            best.copy_(value)
        self.log(f"val/{self.best_metric}_best", best.clone(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log_epoch_means("test", self.test_metrics, prog_bar=False)

    def log_epoch_means(self, stage: str, metrics: EpochSums, prog_bar: bool = True) -> dict:
        """The epoch's means and, for val and test, its scores (computed over every rank,
        then reset), logged as `<stage>/<name>`."""
        means = metrics.pop_means(self.trainer.strategy)
        scores = self.scores_of(stage)
        if scores is not None and stage != "train":
            means.update({name: value.float() for name, value in scores.compute().items()})
            scores.reset()
        for name, value in means.items():
            self.log(f"{stage}/{name}", value, prog_bar=prog_bar)
        return means

    def _epoch_sums(self) -> dict[str, EpochSums]:
        return {k: v for k, v in vars(self).items() if isinstance(v, EpochSums)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["epoch_sums"] = {
            k: v.sums.cpu() for k, v in self._epoch_sums().items() if v.sums is not None
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, sums in checkpoint.get("epoch_sums", {}).items():
            self._epoch_sums()[name].sums = sums.to(self.device).float()
        # a checkpoint of a run with another objective holds another best-so-far: evaluating
        # it (or starting from it) keeps this run's, which starts afresh
        state = checkpoint.get("state_dict", {})
        ours = f"val_{self.best_metric}_best"
        for key in [k for k in state if k.startswith("val_") and k.endswith("_best")]:
            if key != ours:
                del state[key]
        state.setdefault(ours, getattr(self, ours).detach().clone())
