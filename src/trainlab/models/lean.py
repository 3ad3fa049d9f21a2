"""Two per-step costs of Lightning that a small model feels, removed without changing what
Lightning does. On the digits MLP (a ~1 ms step) they were about 10 % of the training loop.

- Lightning moves each batch with `apply_to_collection`, a generic walk over any nesting;
  a batch that is a tuple of tensors already on the device needs no walk and no copy.
- Lightning sets `_current_fx_name` on the module around every hook call, ~50 times a
  step, and `nn.Module.__setattr__` checks its parameter, buffer and module tables each time;
  that name is a plain attribute, so it is set directly.
"""

from __future__ import annotations

from typing import Any

import torch


class LeanHooks:
    """Mix into a LightningModule (before `L.LightningModule`)."""

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        if isinstance(batch, tuple | list) and all(
            isinstance(t, torch.Tensor) and t.device == device for t in batch
        ):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
