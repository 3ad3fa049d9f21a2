"""`tune=`: measure before training instead of guessing, then train with what was measured.

- batch size: on a GPU, Lightning's finder for the largest micro batch that fits in memory
  (with a safety margin); on a CPU, where nothing runs out of memory, the smallest micro
  batch within `tolerance` of the best measured samples/s. The optimizer's batch
  (`batch_size`) never changes: accumulation is re-derived.
- lr: Lightning's LR range test at the real micro batch and accumulation, for its own
  number of steps whatever max_epochs says; its suggestion becomes the lr of the run
  (lr_find.png and lr_find.csv in the run dir), unless the curve shows it cannot be trusted:
  then the run falls back to the configured lr with a warning, or is refused.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.tuner import Tuner

from trainlab.checks import (
    ConfigError,
)
from trainlab.config_checks import check_lr_settings
from trainlab.models.width import refuse_lr_test_off_base
from trainlab.plan import Plan, largest_divisor_at_most, with_micro_batch
from trainlab.quiet import lightning_warnings_only

log = logging.getLogger(__name__)


def refuse_distributed(trainer: L.Trainer, what: str) -> None:
    if trainer.world_size > 1:
        raise ConfigError(
            f"tune={what} runs on one device, but this run has world size {trainer.world_size}. "
            "Tune on one device (trainer=gpu or trainer=cpu), then pass what it found "
            "(micro_batch_size=..., lr=...) to the multi-device run."
        )


class _Stopwatch(Callback):
    """Times the training batches after `skip` warm-up batches."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.started: float | None = None
        self.batches = 0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.skip:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.started is not None:
            self.batches += 1
            self.seconds = time.perf_counter() - self.started


def samples_per_second(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    micro_batch_size: int,
    *,
    precision: Any,
    warmup_batches: int,
    measure_samples: int,
) -> float:
    """Train a throw-away copy for a few micro batches on one CPU and time them."""
    batches = max(3, -(-measure_samples // micro_batch_size))
    data = copy.copy(datamodule)
    data.batch_size = micro_batch_size
    stopwatch = _Stopwatch(skip=warmup_batches)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=warmup_batches + batches,
        limit_train_batches=warmup_batches + batches,
        limit_val_batches=0,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[stopwatch],
    )
    trainer.fit(copy.deepcopy(module), datamodule=data)
    return stopwatch.batches * micro_batch_size / stopwatch.seconds


def tune_batch_size(
    trainer: L.Trainer, module, datamodule, plan: Plan, settings: dict[str, Any]
) -> Plan:
    """A new plan with the tuned micro batch; the global batch and the lr stay."""
    refuse_distributed(trainer, "batch_size")
    per_device = plan.batch_size // plan.world_size
    if isinstance(trainer.accelerator, CPUAccelerator):
        candidates = sorted(
            {d for d in (2**k for k in range(2, 16)) if per_device % d == 0} | {per_device}
        )
        with lightning_warnings_only():  # not one "GPU available" line per trial
            measured = {
                m: samples_per_second(
                    module,
                    datamodule,
                    m,
                    precision=trainer.precision,
                    warmup_batches=settings["warmup_batches"],
                    measure_samples=settings["measure_samples"],
                )
                for m in candidates
            }
        best = max(measured.values())
        good_enough = (1 - settings["tolerance"]) * best
        chosen = min(m for m, rate in measured.items() if rate >= good_enough)
        tuned = {
            "method": "cpu throughput",
            "samples_per_s": {str(m): round(r, 1) for m, r in measured.items()},
            "tolerance": settings["tolerance"],
        }
    else:
        found = Tuner(trainer).scale_batch_size(
            module,
            datamodule=datamodule,
            mode="binsearch",
            margin=settings["margin"],
            max_trials=settings["max_trials"],
            max_val=per_device,
        )
        if not found:
            raise ConfigError(
                "tune=batch_size: Lightning's batch-size finder found no micro batch that fits "
                "in memory; set micro_batch_size by hand."
            )
        chosen = largest_divisor_at_most(per_device, found)
        tuned = {
            "method": "memory (Lightning's batch-size finder)",
            "largest_that_fits": found,
            "margin": settings["margin"],
        }
    tuned["micro_batch_size"] = chosen
    log.info("tune=batch_size: micro batch %d (%s)", chosen, tuned)
    new_plan = with_micro_batch(plan, chosen)
    new_plan.tuned = {**plan.tuned, "batch_size": tuned}
    datamodule.batch_size = new_plan.micro_batch_size
    trainer.accumulate_grad_batches = new_plan.accumulate_grad_batches
    return new_plan


# Lightning's LR finder smooths the loss with this factor (its `_LRCallback.beta`)
LIGHTNING_SMOOTHING = 0.98


@dataclass
class TunedLR:
    """What `tune=lr` gives the run: the lr to train at (None: keep the plan's lr, the range
    test could not be trusted) and what goes into `plan.tuned["lr"]`."""

    lr: float | None
    record: dict[str, Any]


def range_test_steps(lrs: list[float], settings: dict[str, Any]) -> list[int]:
    """The optimizer step (0-based) at which each point of Lightning's range test was taken,
    read back from its lr: step 0 runs at min_lr, step s >= 1 at the fraction (s + 1) / N of
    the range (Lightning's schedulers skip 1 / N). Steps that completed an epoch in the middle
    of gradient accumulation leave no point, so points and steps can differ."""
    lo, hi, n = settings["min_lr"], settings["max_lr"], settings["num_training"]
    if settings["mode"] == "linear":
        fractions = [(lr - lo) / (hi - lo) for lr in lrs]
    else:
        fractions = [math.log(lr / lo) / math.log(hi / lo) for lr in lrs]
    return [0 if f * n < 0.5 else round(f * n) - 1 for f in fractions]


def unbiased_losses(losses: list[float], steps: list[int]) -> list[float]:
    """Lightning's smoothed losses with the start-up bias of the moving average taken out.

    Its k-th point (k + 1 losses averaged) is divided by 1 - beta^(global step + 1), and the
    global step is already at least k + 1 then: the first points come out about half the loss
    (2.3 at the start of digits reads 1.17). Divided by 1 - beta^(k + 1) instead, each point is
    the plain weighted mean of the losses so far."""
    beta = LIGHTNING_SMOOTHING
    return [
        loss * (1 - beta ** (step + 2)) / (1 - beta ** (k + 1))
        for k, (loss, step) in enumerate(zip(losses, steps, strict=True))
    ]


def steepest_descent(lrs: list[float], losses: list[float], mode: str) -> int | None:
    """Index of the steepest fall of the (unbiased smoothed) loss, against log(lr) when the lr
    rose exponentially, skipping the first 10 points and the last, as Lightning does.

    Lightning 2.6's own suggestion takes the slope against lr itself: on a log-spaced range
    the tiny steps at the smallest lrs turn noise into the steepest slope (1.6e-5 on digits
    with accumulation, where the loss falls from 1e-3 on)."""
    points = [
        (math.log10(lr) if mode == "exponential" else lr, loss, i)
        for i, (lr, loss) in enumerate(zip(lrs, losses, strict=True))
        if 10 <= i < len(lrs) - 1 and math.isfinite(loss)
    ]
    if len(points) < 2:
        return None
    x, y, at = (list(column) for column in zip(*points, strict=True))
    slopes = torch.gradient(torch.tensor(y), spacing=[torch.tensor(x)])[0]
    return at[int(torch.argmin(slopes))]


def judge_range_test(
    lrs: list[float],
    losses: list[float],
    steps: list[int],
    suggestion: int | None,
    diverged: bool,
    settings: dict[str, Any],
    accumulation: int = 1,
) -> tuple[str | None, dict[str, Any]]:
    """Why the range test cannot be trusted (None: it can), and what it measured.

    `losses` are the unbiased smoothed losses, `suggestion` the index of the steepest
    descent. The test is not trusted when it ran fewer than `num_training` steps without
    diverging; when the smoothed loss never fell by `min_descent` (a fraction) below the
    starting loss (the smoothed loss after 5 steps); when the suggestion lies at or after the
    loss minimum (the loss was rising there already), or at the last point (the loss was still
    falling steepest where the range ends). With gradient accumulation a step that ends an
    epoch leaves no point, so the last point may be one step before the end."""
    asked = settings["num_training"]
    ran = steps[-1] + 1 if steps else 0
    short = ran < asked - (1 if accumulation > 1 else 0)
    finite = [(loss, i) for i, loss in enumerate(losses) if math.isfinite(loss)]
    measured: dict[str, Any] = {"steps": ran, "num_training": asked, "diverged": diverged}
    if not lrs:
        return (
            "it recorded no step (Lightning's finder records the steps that end at a micro "
            "batch whose index + 1 is a multiple of the accumulation: an epoch of fewer "
            "micro batches than one accumulation records none; raise limit_train_batches or "
            "micro_batch_size)",
            measured,
        )
    if not finite:
        return f"it measured no finite loss in {ran} steps", measured
    start = losses[min(4, len(losses) - 1)]
    lowest, at = min(finite)
    descent = (start - lowest) / abs(start) if start else 0.0
    measured.update(
        start_loss=round(start, 4),
        min_loss=round(lowest, 4),
        min_at_lr=lrs[at],
        descent=round(descent, 4),
    )
    if short and not diverged:
        return (
            f"it ran only {ran} of tune.lr.num_training={asked} steps without diverging "
            "(fewer training batches than the test needs: limit_train_batches or the data "
            "ended it)",
            measured,
        )
    if descent < settings["min_descent"]:
        return (
            f"the smoothed loss never fell by tune.lr.min_descent={settings['min_descent']:g} "
            f"of its start: from {start:.4g} its lowest is {lowest:.4g} at lr {lrs[at]:.3g} "
            f"({descent:.1%} lower) over lr {settings['min_lr']:g} to {lrs[-1]:.3g}; the range "
            "reaches no lr that trains (raise tune.lr.max_lr) or the loss is flat",
            measured,
        )
    if suggestion is None:
        return f"too few points ({len(losses)}) for a suggestion before the loss blew up", measured
    measured["suggestion"] = lrs[suggestion]
    if suggestion >= at:
        return (
            f"the suggestion {lrs[suggestion]:.3g} lies at or after the loss minimum (lr "
            f"{lrs[at]:.3g}): the loss was rising there already",
            measured,
        )
    if suggestion >= len(losses) - 2:
        return (
            f"the suggestion {lrs[suggestion]:.3g} is the last lr of the range, where the loss "
            "still fell steepest: raise tune.lr.max_lr",
            measured,
        )
    return None, measured


def tune_lr(
    trainer: L.Trainer, module, datamodule, plan: Plan, settings: dict[str, Any], output_dir: Path
) -> TunedLR:
    """Lightning's LR range test; the suggestion is the steepest descent of the unbiased
    smoothed loss (`steepest_descent`), judged before it is used (`judge_range_test`);
    lr_find.png / lr_find.csv show that curve. The test cycles over the data for
    `num_training` optimizer steps whatever max_epochs says (it is its own measurement; the
    trainer's max_epochs is put back after). A test that cannot be trusted falls back to
    the plan's lr with a warning (`on_failure: fallback`) or is refused (`refuse`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    refuse_distributed(trainer, "lr")
    refuse_lr_test_off_base(module)
    check_lr_settings(settings)
    loop = trainer.fit_loop
    max_epochs = loop.max_epochs
    if max_epochs is not None and max_epochs >= 0:
        # every epoch takes at least one optimizer step: num_training epochs always suffice
        loop.max_epochs = max(max_epochs, settings["num_training"] + 1)
    module.in_range_test = True  # read by configure_optimizers (trainlab.optim.configured)
    try:
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=datamodule,
            min_lr=settings["min_lr"],
            max_lr=settings["max_lr"],
            num_training=settings["num_training"],
            mode=settings["mode"],
            early_stop_threshold=settings["early_stop_threshold"],
            update_attr=False,
        )
    finally:
        loop.max_epochs = max_epochs
        module.in_range_test = False
    lrs = list(finder.results.get("lr", [])) if finder is not None else []
    raw = list(finder.results.get("loss", [])) if finder is not None else []
    threshold = settings["early_stop_threshold"]
    diverged = (
        threshold is not None
        and len(raw) > 2
        and math.isfinite(raw[-1])
        and raw[-1] > threshold * min(raw[:-1])
    )
    steps = range_test_steps(lrs, settings)
    losses = unbiased_losses(raw, steps)
    index = steepest_descent(lrs, losses, settings["mode"])
    failure, measured = judge_range_test(
        lrs, losses, steps, index, diverged, settings, trainer.accumulate_grad_batches
    )
    if len(raw) > 12:  # Lightning's own, for comparison: the slope against lr, not log(lr)
        measured["lightning_suggestion"] = finder.suggestion()
    lr = lrs[index] if index is not None else None

    output_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"step": steps, "lr": lrs, "loss": losses}).to_csv(
        output_dir / "lr_find.csv", index=False
    )
    fig, ax = plt.subplots()
    ax.plot(lrs, losses)
    if index is not None:
        ax.plot(lrs[index], losses[index], markersize=10, marker="o", color="red")
    ax.set_xscale("log" if settings["mode"] == "exponential" else "linear")
    verdict = f"suggestion {lr:.3g}" if failure is None else "not used: " + failure[:60] + "..."
    ax.set_title(
        f"LR range test: {measured['steps']} steps at micro batch {plan.micro_batch_size} x "
        f"{plan.accumulate_grad_batches} accumulation;\n{verdict}",
        fontsize=8,
    )
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    fig.savefig(output_dir / "lr_find.png", dpi=120)
    plt.close(fig)

    if failure is None:
        log.info("tune=lr: suggested lr %.4g (lr_find.png, lr_find.csv)", lr)
        return TunedLR(float(lr), {**measured, "used": float(lr)})
    if settings["on_failure"] == "refuse":
        raise ConfigError(
            f"tune=lr: the LR range test cannot be trusted: {failure}. Its curve is in "
            f"{output_dir / 'lr_find.png'} (and lr_find.csv). Change the range or length "
            "(tune.lr.min_lr, tune.lr.max_lr, tune.lr.num_training), give the lr yourself "
            f"without tune=lr (lr=...), or train at lr={plan.lr_effective:g} anyway with "
            "tune.lr.on_failure=fallback."
        )
    log.warning(
        "tune=lr: the LR range test cannot be trusted (%s); training at the configured lr "
        "%g instead (plan.tuned.lr.fallback; lr_find.png)",
        failure,
        plan.lr_effective,
    )
    return TunedLR(None, {**measured, "used": plan.lr_effective, "fallback": failure})
