"""Muon for the hidden weight matrices and AdamW for the rest, as one optimizer.

Lightning's automatic optimization steps one optimizer per module, and Muon (torch.optim.Muon,
torch >= 2.9) must not take embeddings, the output layer, biases or norm weights: Keller
Jordan's Muon and every recipe since train those with AdamW. So `MuonWithAdamW` holds one
torch Muon and one torch AdamW and is itself a torch Optimizer whose `param_groups` are
theirs (the same dicts), so schedulers, the LR range test, Lightning's checkpointing and
LearningRateMonitor see one optimizer. Which tensors are hidden matrices is decided by
`trainlab.optim.roles`; the groups arrive tagged `use_muon`.

The lr: with `adjust_lr_fn="match_rms_adamw"` (the default here) torch scales each matrix's
orthogonalized update to the RMS an AdamW update has (0.2 * sqrt(max(rows, cols)), Moonshot's
rule), so one `lr` means the same for both parts, and an AdamW lr carries over as a start.
`adjust_lr_fn="original"` is Keller Jordan's scaling (lr ~0.02 for Muon), where the AdamW part
then wants a much smaller lr: set `adamw_lr_ratio` (AdamW's lr = lr x adamw_lr_ratio).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import AdamW, Muon, Optimizer


class MuonWithAdamW(Optimizer):
    """torch.optim.Muon over the groups tagged `use_muon`, torch.optim.AdamW over the others.

    `lr` and `weight_decay` are both parts' (AdamW's lr times `adamw_lr_ratio`); `momentum`,
    `nesterov`, `ns_steps`, `adjust_lr_fn` are Muon's; `betas` and `eps` AdamW's."""

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = "match_rms_adamw",
        adamw_lr_ratio: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ) -> None:
        groups = [g if isinstance(g, dict) else {"params": [g]} for g in params]
        muon_groups = [g for g in groups if g.get("use_muon")]
        adamw_groups = [g for g in groups if not g.get("use_muon")]
        if not muon_groups:
            raise ValueError(
                "no parameter group is tagged use_muon: Muon would train nothing (the network "
                "has no hidden weight matrix, see trainlab.optim.roles)"
            )
        for group in adamw_groups:
            group.setdefault("lr", lr * adamw_lr_ratio)
        self.muon = Muon(
            muon_groups,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        parts = [self.muon]
        if adamw_groups:
            self.adamw = AdamW(
                adamw_groups,
                lr=lr * adamw_lr_ratio,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
            )
            parts.append(self.adamw)
        self._parts = parts
        defaults = {"lr": lr, "weight_decay": weight_decay}
        super().__init__([g for part in parts for g in part.param_groups], defaults)
        self._share_groups_and_state()

    def _share_groups_and_state(self) -> None:
        """Each part keeps its own slice of this optimizer's group dicts, and all share one
        state dict (their parameters are disjoint), so nothing is kept twice."""
        if not isinstance(self.state, defaultdict):
            self.state = defaultdict(dict, self.state)
        start = 0
        for part in self._parts:
            count = len(part.param_groups)
            part.param_groups = self.param_groups[start : start + count]
            start += count
            part.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # replaces self.param_groups and self.state
        self._share_groups_and_state()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self._parts:
            part.step()
        return loss
