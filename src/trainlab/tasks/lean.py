"""A per-step cost of Lightning that a small model feels, removed without changing what
Lightning does (the other one, the generic batch transfer, is skipped by
`InMemoryDataModule.transfer_batch_to_device`).

- Lightning sets `_current_fx_name` on the module around every hook call, ~50 times a
  step, and `nn.Module.__setattr__` checks its parameter, buffer and module tables each time;
  that name is a plain attribute, so it is set directly.
"""

from __future__ import annotations

from typing import Any


class LeanHooks:
    """Mix into a LightningModule (before `L.LightningModule`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
