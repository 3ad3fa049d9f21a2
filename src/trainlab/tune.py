"""`tune=`: measure before training instead of guessing, then train with what was measured.

- batch size: on a GPU, Lightning's finder for the largest micro batch that fits in memory
  (with a safety margin); on a CPU, where nothing runs out of memory, the smallest micro
  batch within `tolerance` of the best measured samples/s. The optimizer's batch
  (`batch_size`) never changes: accumulation is re-derived.
- lr: Lightning's LR range test at the real micro batch and accumulation; its suggestion
  becomes the lr of the run (lr_find.png and lr_find.csv in the run dir).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.tuner import Tuner

from trainlab.checks import ConfigError
from trainlab.plan import Plan, largest_divisor_at_most, with_micro_batch

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
        quiet = logging.getLogger("lightning.pytorch")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # not one "GPU available" line per trial
        try:
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
        finally:
            quiet.setLevel(level)
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


def tune_lr(
    trainer: L.Trainer, module, datamodule, plan: Plan, settings: dict[str, Any], output_dir: Path
) -> float:
    """Lightning's LR range test; saves lr_find.png / lr_find.csv and returns the suggestion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    refuse_distributed(trainer, "lr")
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
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        ran = len(finder.results.get("lr", [])) if finder is not None else 0
        if ran < settings["num_training"]:
            why = (
                f"it ran only {ran} of tune.lr.num_training={settings['num_training']} steps: "
                "the test cannot run longer than max_epochs x the training batches of an "
                "epoch (limit_train_batches) allow; raise those or lower tune.lr.num_training"
            )
        else:
            why = "the loss never fell before it blew up: lower tune.lr.min_lr"
        raise ConfigError(f"The LR range test found no suggestion: {why}.")
    output_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(finder.results).to_csv(output_dir / "lr_find.csv", index=False)
    fig = finder.plot(suggest=True, show=False)
    ax = fig.axes[0]
    ax.set_title(
        f"LR range test: {len(finder.results['lr'])} steps at micro batch "
        f"{plan.micro_batch_size} x {plan.accumulate_grad_batches} accumulation; "
        f"suggestion {suggestion:.3g}",
        fontsize=9,
    )
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    fig.savefig(output_dir / "lr_find.png", dpi=120)
    plt.close(fig)
    log.info("tune=lr: suggested lr %.4g (lr_find.png, lr_find.csv)", suggestion)
    return float(suggestion)
