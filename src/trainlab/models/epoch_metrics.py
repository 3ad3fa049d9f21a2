"""Epoch metrics summed on the device and logged once per epoch.

Lightning's `self.log` costs about a millisecond per call, and a torchmetrics update runs
input checks that wait for the device: for a small model that is more than the step itself.
Adding a batch's numbers to a few sums in place costs microseconds and never waits. The sums
are buffers, so they travel with checkpoints: a run resumed mid-epoch reports the same epoch
means as one left alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EpochSums(nn.Module):
    """Sums of named batch means weighted by the batch's count (samples, tokens)."""

    def __init__(self, *names: str) -> None:
        super().__init__()
        self.names = names
        # float32, not float64 (MPS has none): exact for counts below 2**24 per epoch
        self.register_buffer("sums", torch.zeros(len(names) + 1))

    @torch.no_grad()
    def add(self, count: int, **batch_means: Tensor) -> None:
        for i, name in enumerate(self.names):
            self.sums[i] += batch_means[name].detach().float() * count
        self.sums[-1] += count

    def pop_means(self, strategy) -> dict[str, Tensor]:
        """This epoch's means over every rank (one all-reduce); the sums start again at zero."""
        sums = self.sums.clone()
        if strategy is not None and strategy.world_size > 1:
            sums = strategy.reduce(sums, reduce_op="sum")
        self.sums.zero_()
        return {name: sums[i] / sums[-1] for i, name in enumerate(self.names)}


class LogsEpochMeans:
    """For LightningModules: log an `EpochSums`' means as `<stage>/<name>`, once per epoch."""

    def log_epoch_means(self, stage: str, metrics: EpochSums, prog_bar: bool = True) -> dict:
        means = metrics.pop_means(self.trainer.strategy)
        for name, value in means.items():
            self.log(f"{stage}/{name}", value, prog_bar=prog_bar)
        return means
