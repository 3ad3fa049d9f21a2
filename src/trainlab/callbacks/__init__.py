"""Callbacks: cross-cutting concerns of a run, each a Lightning callback.

- `guards`: what the pipeline always adds (divergence, signals, the loop's timer, the final
  weights validated, the throughput summary); they guard what `metrics.json` may claim;
- `schedule_free`: a schedule-free optimizer's train/eval modes around evaluation and saving;
- `ema`: the exponential moving average of the weights (`callbacks=ema`).

The names below are re-exported because configs name them (`trainlab.callbacks.tokens_in`).
"""

from trainlab.callbacks.guards import (
    Diverged,
    DivergenceGuard,
    Interrupted,
    LoopTimer,
    StopOnSignal,
    ThroughputSummary,
    ValidateFinalWeights,
    samples_in,
    tokens_in,
)

__all__ = [
    "Diverged",
    "DivergenceGuard",
    "Interrupted",
    "LoopTimer",
    "StopOnSignal",
    "ThroughputSummary",
    "ValidateFinalWeights",
    "samples_in",
    "tokens_in",
]
