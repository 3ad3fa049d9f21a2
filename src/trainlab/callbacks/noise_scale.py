"""The gradient noise scale B_simple = tr(Σ) / |G|², estimated as the run trains (McCandlish
et al., "An Empirical Model of Large-Batch Training", 2018, appendix A.1).

A gradient over a batch of B samples has E|G_B|² = |G|² + tr(Σ) / B, so the squared norms of
gradients over two batch sizes b < B give unbiased estimates of both terms:

    |G|²  = (B |G_B|² - b |G_b|²) / (B - b)
    tr(Σ) = (|G_b|² - |G_B|²) / (1/b - 1/B)

A run already has two batch sizes whenever an optimizer step is made of several micro-batch
gradients: the micro batch on one device (b = micro_batch_size) and the optimizer batch
(B = batch_size = b x accumulation x world size), whose gradient is the mean of theirs. A hook
on each parameter reads each micro batch's own gradient as autograd computes it (before it is
added to `.grad`, and under DDP before the all-reduce), so nothing is copied; the optimizer
batch's gradient is `.grad` at `on_before_optimizer_step` (unscaled, before clipping). Each
estimate is noisy, often negative; their exponential moving averages (bias-corrected) are not,
and B_simple is the ratio of the two averages, as in the paper.

Reading it (README, "Batch size by compute"): B_simple approximates the critical batch size,
beyond which doubling the batch buys almost no fewer optimizer steps.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from trainlab.noise_knobs import check_two_batch_sizes

log = logging.getLogger(__name__)

DECAY = 0.99  # of the moving averages: about the last 100 optimizer steps
LARGE = 2**20  # entries: a gradient this large is normed in its hook, not held
TRAJECTORY_POINTS = 200  # at most this many (step, B_simple) pairs are kept for metrics.json


def two_batch_estimates(
    small_sq: float, small: float, big_sq: float, big: float
) -> tuple[float, float]:
    """(|G|², tr(Σ)): unbiased from the mean squared gradient norm over batches of `small`
    samples and the squared norm of one gradient over `big` samples (small < big)."""
    if not 0 < small < big:
        raise ValueError(f"need two batch sizes 0 < small < big, got {small} and {big}")
    grad_sq = (big * big_sq - small * small_sq) / (big - small)
    trace = (small_sq - big_sq) / (1 / small - 1 / big)
    return grad_sq, trace


class MovingAverages:
    """Bias-corrected exponential moving averages of |G|² and tr(Σ), kept as tensors so that
    an update needs no host sync (the correction is the averaged weight of the finite steps,
    so a skipped step counts for nothing); `state_dict` makes them resumable."""

    def __init__(self, decay: float = DECAY) -> None:
        self.decay = decay
        self.grad_sq = torch.zeros((), dtype=torch.float64)
        self.trace = torch.zeros((), dtype=torch.float64)
        self.weight = torch.zeros((), dtype=torch.float64)  # of the finite steps: bias correction
        self.updates = 0

    def update(self, grad_sq: torch.Tensor, trace: torch.Tensor) -> None:
        """One step's estimates; a non-finite pair (an overflowed 16-mixed step, which the
        scaler skips too) leaves the averages as they were, without a host sync."""
        grad_sq, trace = torch.as_tensor(grad_sq), torch.as_tensor(trace)
        old_grad_sq, old_trace = self.grad_sq.to(grad_sq.device), self.trace.to(trace.device)
        finite = torch.isfinite(grad_sq) & torch.isfinite(trace)
        new_grad_sq = self.decay * old_grad_sq + (1 - self.decay) * grad_sq
        new_trace = self.decay * old_trace + (1 - self.decay) * trace
        self.grad_sq = torch.where(finite, new_grad_sq, old_grad_sq)
        self.trace = torch.where(finite, new_trace, old_trace)
        weight = self.weight.to(grad_sq.device)
        self.weight = torch.where(finite, self.decay * weight + (1 - self.decay), weight)
        self.updates += 1

    def values(self) -> tuple[float, float] | None:
        """(|G|², tr(Σ)) averaged so far, or None before the first update."""
        weight = float(self.weight)
        if not self.updates or weight <= 0:
            return None
        return float(self.grad_sq) / weight, float(self.trace) / weight

    def noise_scale(self) -> float | None:
        """B_simple, or None while the averages are not both positive (the first steps)."""
        values = self.values()
        if values is None or values[0] <= 0 or values[1] <= 0:
            return None
        return values[1] / values[0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "grad_sq": float(self.grad_sq),
            "trace": float(self.trace),
            "weight": float(self.weight),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.grad_sq = torch.tensor(state["grad_sq"], dtype=torch.float64)
        self.trace = torch.tensor(state["trace"], dtype=torch.float64)
        self.weight = torch.tensor(state["weight"], dtype=torch.float64)
        self.updates = state["updates"]


class GradientNoiseScale(Callback):
    """`noise_scale=true`: estimates B_simple from every optimizer step's micro-batch and
    optimizer-batch gradients; logs `train/noise_scale` every `log_every_n_steps`; saves its
    averages in the checkpoint; `summary()` is what metrics.json records."""

    def __init__(self, micro_batch_size: int, batch_size: int, decay: float = DECAY) -> None:
        self.small, self.big = micro_batch_size, batch_size
        self.averages = MovingAverages(decay)
        self.trajectory: list[tuple[int, float]] = []
        self._handles: list[Any] = []
        self._micro_grads: list[torch.Tensor] = []  # this micro batch's small gradients
        self._micro_norms: list[torch.Tensor] = []  # ... and the norms of its large ones
        self._micro_sums: list[torch.Tensor] = []  # one per micro batch of this step
        self._micro_sizes: list[int] = []  # the samples of each micro batch of this step
        self._every = 1
        self._to_loggers = True
        self._stride = 1  # trajectory points every `_stride` logging intervals
        self._last_logged: int | None = None

    @property
    def state_key(self) -> str:
        return "GradientNoiseScale"

    # --- hooks --------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._every = trainer.log_every_n_steps or 50  # 0: no logging, a trajectory still
        self._to_loggers = trainer.log_every_n_steps > 0
        for p in trained_parameters(trainer):  # the optimizer's, as `.grad` is read below
            self._handles.append(p.register_hook(self._read_micro_gradient))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._micro_sizes.append(samples_in(batch))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_logged != trainer.global_step:  # the final value, logged and kept
            self._log(trainer, trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hooks()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error) -> None:
        self._remove_hooks()

    def _read_micro_gradient(self, grad: torch.Tensor) -> None:
        # a large gradient's norm is taken now, so that autograd frees it as usual; small ones
        # are held until the backward ends and normed in one fused call (less Python per step)
        if grad.numel() >= LARGE:
            self._micro_norms.append(torch.linalg.vector_norm(grad.detach(), dtype=torch.float32))
        else:
            self._micro_grads.append(grad)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parts = [squared_norm(self._micro_grads)] if self._micro_grads else []
        if self._micro_norms:
            parts.append(torch.stack(self._micro_norms).square().sum())
        # one entry per backward on every rank, even one whose parameters got no gradient
        self._micro_sums.append(sum(parts) if parts else torch.zeros(()))
        self._micro_grads, self._micro_norms = [], []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module, optimizer) -> None:
        sums, self._micro_sums = self._micro_sums, []
        sizes, self._micro_sizes = self._micro_sizes, []
        accumulation = trainer.accumulate_grad_batches
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        # an epoch's short last step (fewer or smaller micro batches) has other batch sizes
        # (under batch_size_warmup the first steps are one micro batch: nothing to compare)
        usable = len(sums) == accumulation and set(sizes) == {self.small} and bool(grads)
        usable = usable and accumulation * trainer.world_size >= 2
        if not sums:
            return
        # Lightning divides each micro batch's loss by the accumulation: undo it (squared)
        small_sq = torch.stack(sums).sum().double() * accumulation**2
        scale = loss_scale(trainer)
        if scale != 1.0:  # 16-mixed: the hooks saw the scaled gradients, .grad is unscaled
            small_sq = small_sq / scale**2
        world = trainer.world_size
        if world > 1 and dist.is_available() and dist.is_initialized():
            # every rank takes part at every step; a step any rank cannot use is skipped by all
            both = torch.stack([small_sq, small_sq.new_tensor(0.0 if usable else 1.0)])
            dist.all_reduce(both)  # the sum over ranks' micro batches, and of the refusals
            small_sq, usable = both[0], bool(both[1] == 0)
        if not usable:
            return
        small_sq = small_sq / (accumulation * world)  # the mean |G_b|²
        big_sq = squared_norm(grads).double()
        big = self.small * accumulation * world  # batch_size, or a warmup's smaller batch
        grad_sq, trace = two_batch_estimates(small_sq, self.small, big_sq, big)
        self.averages.update(grad_sq, trace)
        done = trainer.global_step + 1  # optimizer steps once this one is taken
        if done % (self._every * self._stride) == 0:
            self._log(trainer, done)

    def _log(self, trainer: L.Trainer, done: int) -> None:
        """B_simple after `done` optimizer steps: into the trajectory and to the loggers, at
        Lightning's own step for a step's train metrics (the steps before it)."""
        value = self.averages.noise_scale()
        if value is None:
            return
        self._last_logged = done
        self.trajectory.append((done, value))
        if len(self.trajectory) > TRAJECTORY_POINTS:  # every other point, and half as often
            spacing = 2 * self._every * self._stride
            self.trajectory = [p for p in self.trajectory if p[0] % spacing == 0]
            self._stride *= 2
        if self._to_loggers:
            for logger in trainer.loggers:
                logger.log_metrics({"train/noise_scale": value}, step=max(0, done - 1))
        trainer.callback_metrics["train/noise_scale"] = torch.tensor(value)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- checkpoint and record ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "averages": self.averages.state_dict(),
            "trajectory": [list(point) for point in self.trajectory],
            "stride": self._stride,
            "batch_sizes": [self.small, self.big],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("batch_sizes") != [self.small, self.big]:
            log.warning(
                "noise scale: the checkpoint's averages were taken at batch sizes %s, this run's "
                "are %s: they start again",
                state.get("batch_sizes"),
                [self.small, self.big],
            )
            return
        self.averages.load_state_dict(state["averages"])
        self.trajectory = [(int(s), float(v)) for s, v in state["trajectory"]]
        self._stride = int(state.get("stride", 1))

    def summary(self) -> dict[str, Any]:
        """What metrics.json records as trained.noise_scale."""
        values = self.averages.values()
        final = self.averages.noise_scale()
        return {
            "noise_scale": final,
            "grad_sq_norm": values[0] if values else None,
            "trace_covariance": values[1] if values else None,
            "micro_batch_size": self.small,
            "batch_size": self.big,
            "steps_averaged": self.averages.updates,
            "decay": self.averages.decay,
            "trajectory": [[s, round(v, 6)] for s, v in self.trajectory],
        }


def trained_parameters(trainer: L.Trainer) -> list[torch.nn.Parameter]:
    """The parameters the optimizers step (those whose `.grad` is the optimizer batch's)."""
    seen, params = set(), []
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    return params


def samples_in(batch: Any) -> int:
    """The number of samples of a batch: the leading size of its first tensor."""
    if isinstance(batch, torch.Tensor) and batch.ndim > 0:
        return int(batch.shape[0])
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0]) if batch[0].ndim > 0 else -1
    for leaf in torch.utils._pytree.tree_leaves(batch):
        if isinstance(leaf, torch.Tensor) and leaf.ndim > 0:
            return int(leaf.shape[0])
    return -1


def squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The sum of squares of all the tensors' entries, in float32, in a few fused kernels."""
    norms = torch._foreach_norm([t.detach() for t in tensors], 2, dtype=torch.float32)
    return torch.stack(norms).square().sum()


def loss_scale(trainer: L.Trainer) -> float:
    """The GradScaler's current scale under 16-mixed, else 1."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return 1.0
    scale = float(scaler.get_scale())
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def noise_scale_estimator(plan: Any) -> GradientNoiseScale:
    """The estimator for a run's plan, refused when the plan has only one batch size."""
    check_two_batch_sizes(plan)
    return GradientNoiseScale(plan.micro_batch_size, plan.batch_size)


def noise_scale_of(trainer: L.Trainer) -> dict[str, Any] | None:
    """The estimator's summary, if the run had one."""
    for callback in trainer.callbacks:
        if isinstance(callback, GradientNoiseScale):
            return callback.summary()
    return None
