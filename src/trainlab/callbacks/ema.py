"""An exponential moving average of the weights: Lightning's own EMAWeightAveraging.

Lightning swaps the average in for every validation, copies it into the model when training
ends, and saves it as the checkpoint's `state_dict` (the weights being trained go to
`current_model_state`, the average's count to `averaging_state`), so the best checkpoint,
the test and `eval.py` see the averaged weights and a resumed run continues the average.

What this subclass changes, each a case where Lightning's callback would mislead here:
  - a decay warmup (`warmup=true`, TensorFlow's `num_updates` rule): the decay of update n is
    min(decay, (1+n)/(10+n)), which reaches 0.99 after ~890 updates and 0.999 after ~9000.
    Lightning's first update copies the weights of step 1 and the average then forgets them at
    `decay` per step: with 0.999 over a 380-step run, 68 % of the "average" would still be the
    weights after one step;
  - the network (`module.net`) is what is swapped in, copied back and saved as the average;
    the rest of the module's state (the best-so-far of the objective, a buffer starting at
    -inf, and the metric sums) stays the run's own. Lightning's averaged copy is of the whole
    module, so those are averaged there too, but never used;
  - before its first update there is no average: validation and the end of training keep the
    trained weights (Lightning would swap in the initial ones, with `update_starting_at_step`);
  - loading a checkpoint to test, validate or predict after fit (the best checkpoint,
    `train=false`), Lightning would put the trained rather than the averaged weights back into
    the model; here the averaged ones stay, which is what was validated and chosen;
  - loading in fit, the module's own state keys come from `state_dict` (which the module's
    hook may have adapted, e.g. a best-so-far for another objective), the network's trained
    weights from `current_model_state`.
Sharded models (FSDP) are not supported by Lightning's callback: such a run is refused before
it starts (trainlab.optim.combinations).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)

NET = "net."  # the prefix of the network's keys in a TaskModule's state_dict


def ema_update(decay: float, warmup: bool):
    """AveragedModel's `avg_fn`: one EMA step of a tensor, the decay warmed up over the first
    updates when `warmup` (computed on the tensor's device: no host sync per parameter)."""

    def update(average: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not warmup:
            return average + (current - average) * (1 - decay)
        n = updates.to(device=average.device, dtype=torch.float32)
        step_decay = torch.clamp((1 + n) / (10 + n), max=decay).to(average.dtype)
        return average + (current - average) * (1 - step_decay)

    return update


class EMA(EMAWeightAveraging):
    """EMAWeightAveraging with `decay`, `warmup`, `update_starting_at_step`,
    `update_every_n_steps`; see the module's docstring for what differs."""

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
    ) -> None:
        WeightAveraging.__init__(
            self, device=device, use_buffers=use_buffers, avg_fn=ema_update(decay, warmup)
        )
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch
        self.decay, self.warmup = decay, warmup

    @staticmethod
    def _network(module: L.LightningModule):
        """The parameters and buffers that are averaged: the network's, in a fixed order."""
        net = getattr(module, "net", module)
        return itertools.chain(net.parameters(), net.buffers())

    def _updates(self) -> int:
        return 0 if self._average_model is None else int(self._average_model.n_averaged.item())

    def _pairs(self, pl_module: L.LightningModule):
        assert self._average_model is not None
        average_model = self._average_model.module
        return zip(self._network(average_model), self._network(pl_module), strict=True)

    def _swap_models(self, pl_module: L.LightningModule) -> None:
        if self._updates() == 0:
            return  # no average yet: the trained weights are what there is
        for average, current in self._pairs(pl_module):
            kept = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(kept)

    def _copy_average_to_current(self, pl_module: L.LightningModule) -> None:
        if self._updates() == 0:
            return
        for average, current in self._pairs(pl_module):
            current.data.copy_(average.data)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        current = checkpoint.get("current_model_state")
        if current is None:
            return
        if self._updates() == 0:  # no average yet: the weights to evaluate are the trained ones
            checkpoint["state_dict"] = dict(current)
            return
        if not hasattr(pl_module, "net"):
            return
        averaged = checkpoint["state_dict"]  # the network's average; the rest as it is now
        checkpoint["state_dict"] = {
            name: averaged[name] if name.startswith(NET) else value
            for name, value in current.items()
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # the checkpoint's state_dict, the averaged weights, is already loaded
        current = checkpoint.get("current_model_state")
        if current is not None and hasattr(pl_module, "net"):
            checkpoint["current_model_state"] = {
                name: current.get(name, value) if name.startswith(NET) else value
                for name, value in checkpoint["state_dict"].items()
            }
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def decay_reached(self) -> float:
        """The decay of the last update (below `decay` while the warmup lasts)."""
        n = self._updates()
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        warm = ", warmed up as (1+n)/(10+n)" if self.warmup else ""
        log.info(
            "EMA of the weights: decay %g%s; validation and checkpoints use it", self.decay, warm
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        reached = self.decay_reached()
        if reached < self.decay:
            log.warning(
                "EMA: decay %g was not reached in %d updates; with the warmup the last update's "
                "decay was %.4f, so a decay above that changed nothing in this run (a run this "
                "short: a lower decay, or callbacks.ema.warmup=false)",
                self.decay,
                self._updates(),
                reached,
            )

    def record(self) -> dict[str, Any]:
        """What metrics.json says about the weights that were evaluated."""
        record = {"averaged": "ema", "decay": self.decay, "warmup": self.warmup, "updates": None}
        if self._average_model is not None:  # trained here, not only evaluated
            record.update(updates=self._updates(), decay_reached=round(self.decay_reached(), 6))
        return record


def evaluated_weights(trainer: L.Trainer) -> dict[str, Any]:
    """Which weights validation, the best checkpoint and the test used: the EMA's, the
    schedule-free optimizer's evaluation point, or the trained weights themselves."""
    for callback in trainer.callbacks:
        if isinstance(callback, EMA):
            return callback.record()
    from trainlab.callbacks.schedule_free import ScheduleFreeModes

    if any(isinstance(c, ScheduleFreeModes) for c in trainer.callbacks):
        return {"averaged": "schedule_free", "note": "the optimizer's eval-mode weights (x)"}
    return {"averaged": None}
