"""The framework's noise off the console and out of train.log, matched by message only.

- Lightning's "💡 Tip: For seamless cloud logging ..." (litlogger) and "... cloud uploads
  ..." (litmodels) lines: advertisements, printed at every Trainer;
- torch's "`isinstance(treespec, LeafSpec)` is deprecated" warning, raised from Lightning's
  own code (nothing a user of this template can change).

Everything else, other warnings of the same category included, still shows. (The model
summary's column of zero FLOPs is left out by trainlab.tables.)
"""

from __future__ import annotations

import logging
import warnings

TIPS = ("💡 Tip: For seamless cloud",)
WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


class DropMessages(logging.Filter):
    """Drops log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...] = TIPS) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_framework() -> None:
    """Install the filters (idempotent): on the handlers of the root logger (Hydra's console
    and train.log) and of Lightning's own loggers, and in `warnings`."""
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    loggers = [logging.getLogger(name) for name in ("", "lightning", "lightning.pytorch")]
    for handler in {h for logger in loggers for h in logger.handlers}:
        if not any(isinstance(f, DropMessages) for f in handler.filters):
            handler.addFilter(DropMessages())
