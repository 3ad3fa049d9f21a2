"""A schedule-free optimizer's two modes, switched where Lightning cannot know to.

Schedule-free AdamW trains at one point (`y`, train mode) and is evaluated at another, the
average of its iterates (`x`, eval mode); its `.train()`/`.eval()` move the weights between
them, and its `step()` refuses to run in eval mode. Lightning calls neither, so this does:
  - train mode before every training batch (after a validation inside an epoch, at the start,
    after a resume);
  - eval mode for every validation (the sanity check and the best-checkpoint choice too), and
    when training ends, so the test, predictions and the last weights are `x`;
  - every checkpoint holds `x` and the optimizer as it is in eval mode: a checkpoint saved
    in the middle of an epoch switches to eval, is taken again, and switches back. The run that
    goes on and the run resumed from that checkpoint then make the same switch back, so a
    resume is exact.
run.py adds it whenever the optimizer is schedule-free (trainlab.optim.registry), also for the
LR range test, whose steps need train mode.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from trainlab.optim.schedule_free import is_schedule_free


class ScheduleFreeModes(Callback):
    def _switch(self, trainer: L.Trainer, train: bool) -> list[Any]:
        """Put every schedule-free optimizer in the mode asked; returns those that changed."""
        changed = []
        for optimizer in trainer.optimizers:
            if is_schedule_free(optimizer) and in_train_mode(optimizer) != train:
                optimizer.train() if train else optimizer.eval()
                changed.append(optimizer)
        return changed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._switch(trainer, train=True)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._switch(trainer, train=False)

    def on_train_end(self, trainer, pl_module) -> None:
        self._switch(trainer, train=False)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if not self._switch(trainer, train=False):
            return  # already in eval mode: what was dumped is x
        strategy = trainer.strategy
        # copies: a state_dict shares the parameters' storage, which switching back rewrites
        checkpoint["state_dict"] = {
            name: value.clone() if isinstance(value, torch.Tensor) else value
            for name, value in strategy.lightning_module_state_dict().items()
        }
        if "optimizer_states" in checkpoint:
            checkpoint["optimizer_states"] = [
                strategy.optimizer_state(o) for o in trainer.optimizers
            ]
        self._switch(trainer, train=True)


def in_train_mode(optimizer) -> bool:
    return all(group.get("train_mode", False) for group in optimizer.param_groups)
