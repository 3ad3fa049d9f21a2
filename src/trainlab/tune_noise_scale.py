"""`tune=noise_scale`: a short measurement of the gradient noise scale before training, whose
B_simple the plan records as `critical_batch_size` (trainlab.callbacks.noise_scale).

A throw-away copy of the module trains `steps` optimizer steps at the run's batch_size, made
of micro batches: the run's own when it accumulates, else a quarter of the batch (the same
batch, so the same optimizer and lr; only the split differs). The run then trains from the
weights it had, with the data order it would have had (run.py re-seeds after any tuning).

B_simple is measured at the start of training, where it is smallest: it grows as the loss
falls (McCandlish et al. 2018; Merrill et al. 2025), so a batch_size below it at the start
may be right only for the first part of a run (batch_size_warmup, when it exists, grows it).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import lightning as L

from trainlab.building import callbacks_for_optimizer
from trainlab.callbacks.noise_scale import GradientNoiseScale
from trainlab.checks import ConfigError
from trainlab.noise_knobs import quarter_of
from trainlab.plan import Plan
from trainlab.quiet import lightning_warnings_only

log = logging.getLogger(__name__)


def probe_micro_batch(plan: Plan) -> int:
    """The micro batch of the measurement: the run's when it accumulates, else a quarter of
    the batch (a divisor of it)."""
    if plan.accumulate_grad_batches >= 2:
        return plan.micro_batch_size
    if plan.batch_size < 2:
        raise ConfigError(
            f"tune=noise_scale needs a batch of at least 2 samples to split into two batch "
            f"sizes; batch_size={plan.batch_size}. Give batch_size=32 or more."
        )
    return quarter_of(plan.batch_size)


def reading(critical: float, batch_size: int) -> str:
    """One line that says what B_simple means for this batch_size."""
    if batch_size > 2 * critical:
        return (
            f"batch_size={batch_size} is above the critical batch (~{critical:.0f}): each step "
            "averages away more noise than there is, so more samples per step buy few fewer "
            "steps (diminishing returns per sample)"
        )
    if batch_size < critical / 2:
        return (
            f"batch_size={batch_size} is below the critical batch (~{critical:.0f}): steps are "
            "spent on gradient noise; a larger batch (with its lr) would need fewer steps"
        )
    return f"batch_size={batch_size} is near the critical batch (~{critical:.0f})"


def tune_noise_scale(
    trainer: L.Trainer, module, datamodule, plan: Plan, settings: dict[str, Any]
) -> Plan:
    """The plan with `critical_batch_size` and `tuned.noise_scale` (what was measured)."""
    if trainer.world_size > 1:
        raise ConfigError(
            f"tune=noise_scale measures on one device, but this run has world size "
            f"{trainer.world_size}. Measure on one device (trainer=cpu or trainer=gpu), or "
            "estimate it during this run with noise_scale=true."
        )
    steps = settings["steps"]
    micro = probe_micro_batch(plan)
    accumulation = plan.batch_size // micro
    estimator = GradientNoiseScale(micro, plan.batch_size, decay=1 - 1 / steps)
    data = copy.copy(datamodule)
    data.batch_size = micro
    probe = L.Trainer(
        accelerator=trainer.accelerator,
        devices=1,
        precision=trainer.precision,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        accumulate_grad_batches=accumulation,
        gradient_clip_val=trainer.gradient_clip_val,
        log_every_n_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[estimator, *callbacks_for_optimizer(module.optimizer_factory)],
    )
    with lightning_warnings_only():  # not the "GPU available" lines again
        probe.fit(copy.deepcopy(module), datamodule=data)
    measured = estimator.summary()
    measured.pop("trajectory")
    critical = measured["noise_scale"]
    if critical is None:
        raise ConfigError(
            f"tune=noise_scale: after {measured['steps_averaged']} steps the estimates of "
            f"|G|² ({measured['grad_sq_norm']}) and tr(Σ) ({measured['trace_covariance']}) are "
            "not both positive, so there is no noise scale to read. Measure longer "
            "(tune.noise_scale.steps=500) or at a larger batch_size."
        )
    measured["steps"] = steps
    measured["reading"] = reading_now = reading(critical, plan.batch_size)
    log.info("tune=noise_scale: B_simple %.1f over %d steps; %s", critical, steps, reading_now)
    new_plan = Plan(**{**plan.as_dict(), "critical_batch_size": round(critical)})
    new_plan.tuned = {**plan.tuned, "noise_scale": measured}
    return new_plan
