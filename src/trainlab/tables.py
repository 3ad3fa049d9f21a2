"""The two tables Lightning prints, logged instead, so that `<run dir>/train.log` has them too.

Lightning prints the model summary when fit starts, and the metrics of a `test` or
`validate` when it ends, with rich straight to stdout: outside Python logging, so Hydra's
train.log never had them. `LoggedModelSummary` and `LoggedResults` log the same tables as
plain text (logger `trainlab.tables`), once, through the root logger's handlers: the
console and train.log. `building.build_trainer` adds both, and Lightning then prints
neither.

The summary leaves out the FLOPs column and total when they are 0: Lightning counts FLOPs
only by running the module's `example_input_array`, so without one (the template's models
have none) it shows a column of zeros and "Total FLOPs: 0". A module that sets one gets
its FLOPs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelSummary
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)

from trainlab.console import number

log = logging.getLogger("trainlab.tables")


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, ` | ` between them, a rule under the header
    and under the last row (Lightning's plain summary layout)."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    rule = "-" * (sum(widths) + 3 * (len(widths) - 1))
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:]), rule])


def summary_text(
    columns: list[tuple[str, list[str]]],
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: dict[str, int],
    total_flops: int,
) -> str:
    """The model summary's table and totals; FLOPs only when some were counted."""
    if not total_flops:
        columns = [(name, values) for name, values in columns if name != "FLOPs"]
    rows = list(zip(*(values for _, values in columns), strict=True))
    totals = [
        (get_human_readable_count(trainable_parameters), "Trainable params"),
        (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
        (get_human_readable_count(total_parameters), "Total params"),
        (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
        (total_training_modes["train"], "Modules in train mode"),
        (total_training_modes["eval"], "Modules in eval mode"),
    ]
    if total_flops:
        totals.append((get_human_readable_count(total_flops), "Total FLOPs"))
    table = text_table([name for name, _ in columns], rows)
    return "\n".join([table, *(f"{str(value):<10}{label}" for value, label in totals)])


class LoggedModelSummary(ModelSummary):
    """Lightning's ModelSummary (same `max_depth`), logged on global rank 0 instead of
    printed. Being a ModelSummary, it also keeps Lightning from adding its own."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        text = summary_text(
            summary_data,
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops,
        )
        log.info("model summary:\n%s", text)


class LoggedResults(Callback):
    """The metrics of `trainer.test(...)` and `trainer.validate(...)` as one logged table
    (global rank 0), in place of the table Lightning prints after this hook. A call with
    `verbose=False` shows none, as before."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, trainer.test_loop, "Test")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # not the validations of fit
            self._log(trainer, trainer.validate_loop, "Validate")

    def _log(self, trainer: L.Trainer, loop: Any, stage: str) -> None:
        if not loop.verbose:
            return
        loop.verbose = False  # trainer.test() and validate() set it again at every call
        metrics = sorted(trainer.callback_metrics.items())
        if not trainer.is_global_zero or not metrics:
            return
        rows = [(name, number(float(value))) for name, value in metrics]
        log.info("%s results:\n%s", stage.lower(), text_table([f"{stage} metric", "Value"], rows))
