"""The framework's noise off the console and out of train.log, matched by message only.

- Lightning's "💡 Tip: For seamless cloud logging ..." (litlogger) and "... cloud uploads
  ..." (litmodels) lines: advertisements, printed at every Trainer;
- torch's "`isinstance(treespec, LeafSpec)` is deprecated" warning, raised from Lightning's
  own code (nothing a user of this template can change);
- Lightning's "The dirpath has changed from ..." warning when a checkpoint saved by one run is
  evaluated or started from in another (eval.py, ckpt_path=): the new run keeps its own.

Everything else, other warnings of the same category included, still shows, and lands in
train.log too: Python's warnings go to stderr by `warnings.showwarning`, outside logging,
so they are captured (`logging.captureWarnings`) and become WARNING records of the logger
`py.warnings`, on the console and in train.log like any other line. (The model summary's
column of zero FLOPs is left out by trainlab.tables.)
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

TIPS = ("💡 Tip: For seamless cloud",)
WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The dirpath has changed from",
)


class DropMessages(logging.Filter):
    """Drops log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...] = TIPS) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


class WithoutTrailingNewline(logging.Filter):
    """A captured warning ends with the newline stderr needed: in a log, a blank line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):  # Python logs the formatted warning as the message
            record.msg = record.msg.rstrip()
        return True


def quiet_framework() -> None:
    """Install the filters (idempotent): on the handlers of the root logger (Hydra's console
    and train.log) and of Lightning's own loggers, and in `warnings`; then send the
    warnings that pass through logging."""
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logging.captureWarnings(True)
    captured = logging.getLogger("py.warnings")
    if not any(isinstance(f, WithoutTrailingNewline) for f in captured.filters):
        captured.addFilter(WithoutTrailingNewline())
    loggers = [logging.getLogger(name) for name in ("", "lightning", "lightning.pytorch")]
    for handler in {h for logger in loggers for h in logger.handlers}:
        if not any(isinstance(f, DropMessages) for f in handler.filters):
            handler.addFilter(DropMessages())


@contextlib.contextmanager
def lightning_warnings_only() -> Iterator[None]:
    """Lightning's INFO lines ("GPU available", ...) held back while a throw-away Trainer
    measures something (the tune= probes), so they show once per run, not once per probe."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
